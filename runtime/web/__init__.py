"""mnt-web: a live page in the browser (webcam or video file as the driver) over WebSockets,
every tab a stream on one Hub (mnt.runtime.hub)."""

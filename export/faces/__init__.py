"""mediapipe's face detector (BlazeFace) and face mesh, converted from the TFLite files of
its wheel to ONNX components (`face_detector`, `face_landmarks`), gated against a real
TFLite interpreter. Not torch modules: a step of the build of their own."""

"""An artefact folder as a Triton Inference Server model repository."""

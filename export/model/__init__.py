"""The PyTorch reference MarioNETte (export side only). Every module here imports torch
except `config`, which the command lines read for --preset without it."""

"""DARTS neural architecture search driven by Katib's ``nasConfig`` (PyTorch; install ``katibx[nas]``).

Importing this package does not import torch: the settings and search-space helpers are plain Python so the
``darts`` algorithm plugin can validate an experiment on a machine without torch.
"""

"""latenttune: real-time 3D CDI of changing samples through a tuned autoencoder latent space."""

__version__ = "0.1.0"

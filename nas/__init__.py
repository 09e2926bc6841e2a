"""nas: hardware-aware architecture search for lightweight hybrid CNN/ViT backbones."""

__version__ = "0.1.0"

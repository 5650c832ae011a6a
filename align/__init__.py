"""align: preference-alignment objectives, trainers and loops on the Hugging Face stack."""

__version__ = "0.1.0"

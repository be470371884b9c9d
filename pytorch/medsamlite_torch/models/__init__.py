"""SAM-style networks of the MedSAM-on-Laptop family, one file per module."""
from .registry import MODELS, ModelSpec, Profile, build_model, get_spec, list_models
from .sam import Sam

__all__ = ["MODELS", "ModelSpec", "Profile", "Sam", "build_model", "get_spec", "list_models"]

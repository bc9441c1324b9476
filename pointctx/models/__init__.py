"""Registered models. Import a model module here so that its ``@register_model`` runs."""

from ._registry import create_model, is_model, list_models, model_entrypoint, register_model

__all__ = ["create_model", "is_model", "list_models", "model_entrypoint", "register_model"]

"""The OpenAI-shaped faces: Chat Completions, Responses and the models list, as codecs
around the one Messages call (see face.py)."""

from promptrelay.api.openai.face import OpenAIFace

__all__ = ["OpenAIFace"]

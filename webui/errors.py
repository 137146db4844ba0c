"""The errors Hearth reports to a person, in one place (vLLM's ``exceptions.py`` and llm's ``errors.py`` are
the pattern). Every one derives from `HearthError`: the UI shows it as a toast, the API as an OpenAI-style
error body (``webui.api.errors`` maps each to its HTTP status), the CLI as a message and an exit code.

Errors that belong to one room stay beside it and derive from `HearthError` too (``CharacterError`` in
``webui.prompts.png_card``, ``HistoryError``, ``TemplateError``, ``SamplingError``, ``HubError``, ...); this
module holds the family every layer meets: loading, running and generating.
"""

from __future__ import annotations


class HearthError(Exception):
    """Base of the errors Hearth reports to a person (UI toast, API error body, CLI message)."""


class LoaderError(HearthError):
    """A model could not be loaded: wrong loader, corrupt file, missing dependency, bad parameter."""


class ModelRuntimeError(HearthError):
    """The backend failed while evaluating tokens (out of memory, no KV slot, ...)."""


class ModelNotFound(HearthError):
    """A model name that is not in the models folder."""


class RemoteCodeNotAllowed(HearthError):
    """A load asked for trust_remote_code, but Hearth was not started with --trust-remote-code."""


class NoModelLoaded(HearthError):
    """A request that needs a model came while none is loaded."""


class GenerationError(HearthError):
    """A request that cannot be served as asked (bad combination of settings, prompt too long, ...)."""


class ContextLengthError(GenerationError):
    """A text that must be read whole (no truncation makes sense) is longer than the model's context."""

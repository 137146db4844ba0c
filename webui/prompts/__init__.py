"""The prompt layer: instruction templates, characters, chat histories and chat prompt building.

Pure and model-free, so the UI, the API and extensions build identical prompts. Import from the
submodules: ``templates`` (Jinja rendering, auto-detection), ``characters`` (personas and cards),
``history`` (conversations on disk), ``chat`` (prompts in chat / chat-instruct / instruct modes).
"""

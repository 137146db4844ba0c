"""The chat service: history + character + template -> prompt -> generation core -> new history.

The Chat tab and the API's chat completions both go through here, so a chat means the same thing
everywhere. Prompt text itself is built by `webui.prompts.chat` (pure); this module adds what needs the
loaded model (token counting, its template, its BOS/EOS text) and persistence.

Images: a new user message's images (`stream_reply(images=...)`) are stored on its turn, and every prompt
carries the images of the turns it keeps (`ChatPrompt.images`), so regenerate and continue send them again.
A prompt with images the loaded model cannot take is refused (`check_images`) before anything is saved.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from webui.app import App
from webui.chat_messages import ChatError, ImageResolver, messages_to_history
from webui.events import Finished
from webui.generation import GenerationCore, GenerationRequest
from webui.loader_api import Model
from webui.media import Image, MediaError, check_placement
from webui.models import ModelManager
from webui.plugins import PromptBuilder
from webui.prompts.characters import Character, CharacterStore, default_character
from webui.prompts.chat import DEFAULT_CHAT_INSTRUCT_COMMAND, ChatMode, ChatPrompt, build_chat_prompt
from webui.prompts.history import ChatHistory, HistoryStore, Turn
from webui.prompts.reasoning import (
    RULES_NAME,
    ReasoningFormat,
    detect_reasoning,
    disabled_thinking_prefill,
    reasoning_rules,
    starts_inside,
)
from webui.prompts.templates import (
    MODEL_TEMPLATE_NAME,
    DetectedTemplate,
    TemplateError,
    TemplateLibrary,
    check_template,
    user_templates_dir,
)
from webui.prompts.tool_calls import ContentDelta, detect_tool_format
from webui.reply_parts import ReasoningDelta, ReplyShape
from webui.thinking_budget import ThinkingBudget


@dataclass(frozen=True)
class ChatOptions:
    """How a chat turns into a prompt; the Chat tab's controls and the API's chat fields."""

    mode: ChatMode = "chat"
    character: str | None = None  # None: the built-in Assistant
    user_name: str | None = None  # None: the character's own "your name", else "You"
    instruction_template: str | None = None  # None: detected from the loaded model
    #: The Jinja text to use instead of the named/detected template (the Instruction template panel's edits).
    instruction_template_text: str | None = None
    chat_instruct_command: str = DEFAULT_CHAT_INSTRUCT_COMMAND
    #: None: the character's context (instruct) or none (chat-instruct), and the template's own default.
    system_message: str | None = None
    #: Text every new reply starts with: the prompt ends with it and the model continues (tgw's "Start
    #: reply with"); not applied to Continue or Impersonate.
    start_reply_with: str = ""
    #: False: no character's context unless one is named, so an instruct prompt is the model's own template
    #: of the messages (the API's instruct mode); True: the built-in Assistant when none is named.
    default_persona: bool = True
    #: OpenAI function tools the template is given (instruct mode; the API's `tools`).
    tools: tuple[dict[str, Any], ...] = ()
    #: Extra template variables (`chat_template_kwargs`, `enable_thinking`, `reasoning_effort`).
    template_kwargs: tuple[tuple[str, Any], ...] = ()
    #: Whether a thinking model thinks (passed to its template as `enable_thinking`; a template without
    #: that switch gets its reasoning block closed up front). None: on, as llama-server's default.
    enable_thinking: bool | None = None
    #: Most tokens of reasoning before the block is closed and the answer starts (0: no limit).
    thinking_budget: int = 0


@dataclass
class ChatUpdate:
    """One step of a streamed reply: the history including the partial reply, and the reply so far."""

    history: ChatHistory
    text: str
    done: bool = False
    dropped_turns: int = 0
    finish_reason: str | None = None
    finished: Finished | None = None
    #: A thinking model's reasoning so far (kept apart from `text`).
    reasoning: str = ""
    #: The reply is still in its reasoning block.
    thinking: bool = False


@dataclass
class ReplyPlan:
    """A reply ready to generate: its prompt, the history it joins, the text it starts with (a continued
    message or an extension's bot prefix) and the extensions' state for the output modifier."""

    prompt: ChatPrompt
    base: ChatHistory
    prefix: str
    state: dict[str, Any]
    impersonate: bool = False
    continue_last: bool = False
    #: How the reply splits into reasoning, answer and tool calls.
    shape: ReplyShape = ReplyShape()
    #: The thinking budget the generation keeps (None: no limit).
    budget: ThinkingBudget | None = None

    def reply(self, generated: str, trim: bool = True) -> str:
        """The reply text for what the model generated (before the output modifier); `trim` strips the
        whitespace around a new reply for display (the API returns it as generated)."""
        reply = self.prefix + generated
        return reply.strip() if trim and not self.continue_last else reply

    def chat_fields(self) -> dict[str, Any]:
        """The request's `messages` and `tools`, for a remote server rendering its own chat template."""
        return {"messages": self.prompt.messages, "tools": [dict(t) for t in self.shape.tools] or None}


def template_kwargs(options: ChatOptions) -> dict[str, Any]:
    """The extra variables the template gets: the client's `chat_template_kwargs` and the thinking switch."""
    kwargs = dict(options.template_kwargs)
    # on unless turned off, as llama-server passes it: some templates close the block when it is undefined
    kwargs["enable_thinking"] = options.enable_thinking is not False
    return kwargs


def request_from_settings(settings: dict[str, Any], **overrides: Any) -> GenerationRequest:
    """A GenerationRequest from the Parameters-tab settings dict (sampling + generation fields)."""
    data = {k: settings[k] for k in ("max_new_tokens", "truncation_length", "add_bos_token", "stop", "logprobs") if k in settings}
    data["sampling"] = dict(settings.get("sampling") or {})
    data.update(overrides)
    return GenerationRequest.model_validate(data)


class ChatService:
    def __init__(self, app: App):
        self.app = app
        self.characters = CharacterStore(app.settings.user_data_dir)
        self.histories = HistoryStore(app.settings.user_data_dir)
        self.templates = TemplateLibrary(app.settings.templates_dir, user_templates_dir(app.settings.user_data_dir))
        self._reasoning: dict[tuple[int, str], ReasoningFormat | None] = {}  # the last model + template's
        self._image_costs: tuple[object, dict[str, int]] = (None, {})  # the loaded model's, by image sha256
        self._bound: tuple[ModelManager, GenerationCore] | None = None

    @property
    def models(self) -> ModelManager:
        """The model this service builds prompts for: the UI's, or the one `bound` to (a routed request)."""
        return self._bound[0] if self._bound else self.app.models

    @property
    def core(self) -> GenerationCore:
        return self._bound[1] if self._bound else self.app.core

    def bound(self, models: ModelManager, core: GenerationCore) -> ChatService:
        """This service for another loaded model (an API request routed by name): its template, its core.
        The stores and caches are shared."""
        view = copy.copy(self)
        view._bound = (models, core)
        return view

    # -- ingredients ------------------------------------------------------------------------------
    def template(self, name: str | None = None, text: str | None = None) -> DetectedTemplate:
        """The instruction template: `text` when given (an edited template, checked here), else the named
        one (shipped or the user's), else the loaded model's own / detected one."""
        if text is not None and text.strip():
            label = f"{name or 'detected'} (edited)"
            try:
                check_template(text, label)
            except TemplateError as exc:
                raise ChatError(f"instruction template: {exc}") from None
            return DetectedTemplate(label, text, "edited")
        model = self.models.model
        if name and name != MODEL_TEMPLATE_NAME:
            return DetectedTemplate(name, self.templates.load(name), "user")
        own = model.info.chat_template if model else None
        if name == MODEL_TEMPLATE_NAME and not own:
            raise ChatError("the loaded model has no chat template of its own; choose one from templates/")
        return self.templates.detect(own, self.models.model_name or "")

    def character(self, name: str | None) -> Character:
        return self.characters.load(name) if name else default_character()

    def character_for(self, options: ChatOptions) -> Character:
        """The named character, else the built-in Assistant, or with `default_persona` off a bare name."""
        if options.character or options.default_persona:
            return self.character(options.character)
        return Character("Assistant")

    # -- prompts ----------------------------------------------------------------------------------
    def build_prompt(self, history: ChatHistory, user_input: str | None, options: ChatOptions, *,
                     max_new_tokens: int, truncation_length: int = 0, impersonate: bool = False,
                     continue_last: bool = False, images: Sequence[Image] = ()) -> ChatPrompt:
        build = self.prompt_builder(max_new_tokens=max_new_tokens, truncation_length=truncation_length,
                                    impersonate=impersonate, continue_last=continue_last, images=images)
        character = self.character_for(options)
        ext = self.app.extensions
        if ext is None:
            return build(user_input, history, options, character)
        # -- extensions (webui/extensions.py): custom_generate_chat_prompt --------------------------
        state = ext.state(is_chat=True, options=options, character=character, history=history,
                          user_input=user_input, build_prompt=build)
        return ext.custom_chat_prompt(user_input, history, options, character, state, build)

    def prompt_builder(self, *, max_new_tokens: int, truncation_length: int = 0, impersonate: bool = False,
                       continue_last: bool = False, images: Sequence[Image] = ()) -> PromptBuilder:
        """Hearth's own prompt building for one reply: ``build(user_input, history, options, character)``.
        Extensions get it to wrap (see `ExtensionSpecs.custom_generate_chat_prompt`). `images`: the new
        user message's, attached to whatever input the builder is given."""
        model = self.models.require()
        budget = min(truncation_length or model.n_ctx, model.n_ctx) - max_new_tokens

        def image_tokens(image: Image) -> int:
            return self.image_tokens(model, image)

        def build(user_input: str | None, history: ChatHistory, options: ChatOptions, character: Character) -> ChatPrompt:
            template = self.template(options.instruction_template, options.instruction_template_text)
            return build_chat_prompt(
                history, user_input, mode=options.mode, character=character,
                user_name=options.user_name, template_text=template.text, template_name=template.name,
                count_tokens=lambda text: len(model.tokenize(text, add_bos=False)), max_prompt_tokens=max(budget, 1),
                bos_token=model.info.bos_token or "", eos_token=model.info.eos_token or "",
                impersonate=impersonate, continue_last=continue_last,
                chat_instruct_command=options.chat_instruct_command, system_message=options.system_message,
                tools=options.tools, template_kwargs=template_kwargs(options), images=images,
                image_tokens=image_tokens, max_images=model.max_images,
            )

        return build

    def image_tokens(self, model: Model, image: Image) -> int:
        """What `image` costs in `model`'s prompt (`Model.image_tokens`), asked once per image while the model
        stays loaded: fitting and the Chat tab's live count ask often."""
        owner, costs = self._image_costs
        if owner is not model:
            self._image_costs = owner, costs = model, {}
        if image.sha256 not in costs:
            costs[image.sha256] = model.image_tokens(image) if model.max_images else 0
        return costs[image.sha256]

    # -- replies ----------------------------------------------------------------------------------
    def plan_reply(self, history: ChatHistory, user_input: str | None, options: ChatOptions,
                   probe: GenerationRequest, *, impersonate: bool = False, continue_last: bool = False,
                   images: Sequence[Image] = ()) -> ReplyPlan:
        """The prompt for the next reply, after the extensions' chat hooks (chat_input, input, history,
        bot prefix, custom prompt). `probe` carries the request's sizes and settings for the hooks' state.
        The Chat tab and the API's chat completions both plan their replies here. A constrained reply (a
        grammar or JSON schema) is written without reasoning: the constraint holds from its first token.
        `images`: the new user message's; MediaError when the loaded model cannot take the prompt's images."""
        sizes = {"max_new_tokens": probe.max_new_tokens, "truncation_length": probe.truncation_length}
        if probe.sampling.constrained:
            options = replace(options, enable_thinking=False)
        # -- extensions (webui/extensions.py): chat_input, input, history, bot prefix ----------------
        ext, visible, state = self.app.extensions, None, {}
        new_reply = not (impersonate or continue_last)
        bias = options.start_reply_with if new_reply and options.start_reply_with.strip() else ""
        if ext is not None:
            state = ext.state(is_chat=True, request=probe, options=options, history=history, user_input=user_input,
                              character=self.character_for(options), build_prompt=self.prompt_builder(**sizes))
            if user_input and new_reply:
                user_input, visible = ext.modify_chat_input(user_input, user_input, state)
                user_input = ext.modify_input(user_input, state, True)
            history = ext.modify_history(history, state)
            if new_reply:
                bias = ext.bot_prefix(bias, state)  # the hook gets "Start reply with" (else "") to extend
        # -- end extensions ------------------------------------------------------------------------
        base, prefix = self._reply_base(history, user_input, impersonate, continue_last, visible, images)
        if bias:  # the reply starts with the bias: prompt as if continuing a reply that says it
            prompt = self.build_prompt(base.with_turn("assistant", bias), None, options, **sizes, continue_last=True)
            prefix = bias
        else:
            prompt = self.build_prompt(history, user_input, options, **sizes, impersonate=impersonate,
                                       continue_last=continue_last, images=images)
        self.check_images(images=prompt.images)
        if prompt.images:  # a marker typed into the text (or an extension's prompt) would misplace them
            check_placement(prompt.text, prompt.images)
        template = self.template(options.instruction_template, options.instruction_template_text)
        prompt, shape = self._thinking(prompt, template.text, options, reasoning=not impersonate)
        budget = None
        if shape.reasoning is not None and options.thinking_budget > 0:
            budget = ThinkingBudget(tokens=options.thinking_budget, end=shape.reasoning.end,
                                    start="" if shape.inside else shape.reasoning.start)
        return ReplyPlan(prompt, base, prefix, state, impersonate, continue_last, shape, budget)

    def reasoning_format(self, template_text: str) -> ReasoningFormat | None:
        """The loaded model's reasoning markers: from its template, else one-token marker texts of its vocabulary."""
        model = self.models.require()
        key = (id(model), template_text)
        if key not in self._reasoning:
            rules = self.app.settings.templates_dir / RULES_NAME
            markers = {m for f in reasoning_rules(rules) for m in (f.start, f.end) if m} if rules.is_file() else set()
            single = [m for m in markers if len(model.tokenize(m, add_bos=False)) == 1]
            self._reasoning = {key: detect_reasoning(template_text, single, rules_path=rules)}
        return self._reasoning[key]

    def _thinking(self, prompt: ChatPrompt, template_text: str, options: ChatOptions,
                  reasoning: bool) -> tuple[ChatPrompt, ReplyShape]:
        """The reply's shape; thinking off: a template without its own switch gets the block closed (prefill)."""
        fmt = self.reasoning_format(template_text) if reasoning else None
        tool_format = detect_tool_format(template_text) if options.tools else None
        if fmt is None:
            return prompt, ReplyShape(tool_format=tool_format, tools=options.tools)
        inside = starts_inside(prompt.text, fmt)
        if options.enable_thinking is False and options.mode != "chat":
            if inside:  # a prefilled reply: the messages no longer say the prompt
                prompt = replace(prompt, text=prompt.text + fmt.end + "\n\n", messages=None)
            elif "enable_thinking" not in template_text:
                prompt = replace(prompt, text=prompt.text + disabled_thinking_prefill(fmt), messages=None)
            inside = False
        return prompt, ReplyShape(fmt, inside, tool_format, options.tools)

    def plan_reply_to_messages(self, messages: Sequence[dict[str, Any]], options: ChatOptions,
                               probe: GenerationRequest, *, continue_last: bool = False,
                               image_url: ImageResolver | None = None) -> ReplyPlan:
        """`plan_reply` for OpenAI-style messages (system / user / assistant): the last user message is the
        new input; with `continue_last` a final assistant message is continued instead of answered.
        In instruct mode without a named character the messages are all there is: the prompt is what the
        model's template makes of them (its own default system text included), nothing of a persona.
        `image_url` reads an image part's URL (see `messages_to_history`)."""
        history, user_input, system, images = messages_to_history(messages, options.character or "Assistant",
                                                                   image_url)
        if system is not None and options.system_message is None:
            options = replace(options, system_message=system)
        if options.mode == "instruct" and not options.character:
            options = replace(options, default_persona=False)
        return self.plan_reply(history, user_input, options, probe, continue_last=continue_last, images=images)

    def check_images(self, history: ChatHistory | None = None, images: Sequence[Image] = ()) -> None:
        """Whether the loaded model can take the chat `history` with `images` (a new message's): MediaError
        naming the model and the fix otherwise (images for a model without vision: load its projector or a
        vision model; more new images than its limit). NoModelLoaded without a model. The Chat tab calls it
        before it shows a message. A chat's earlier images count against the limit only as far as the prompt
        keeps them: fitting drops the oldest exchanges first (`build_chat_prompt`'s max_images), and
        `plan_reply` checks the images its prompt keeps."""
        earlier = history.images if history is not None else ()
        if not (earlier or images):
            return
        model = self.models.require()
        if model.max_images <= 0 or model.remote is not None:
            raise MediaError(model.vision_missing())
        if len(images) > model.max_images:
            raise MediaError(f"{len(images)} images in one message; {model.info.name} takes at most "
                             f"{model.max_images} per prompt: send fewer")

    def finish_reply(self, plan: ReplyPlan, generated: str, trim: bool = True) -> str:
        """The final reply: prefix + generated (`trim`: stripped, for the Chat tab), after the output modifier."""
        reply = plan.reply(generated, trim)
        ext = self.app.extensions
        if ext is not None and not plan.impersonate:  # extensions: output_modifier
            reply = ext.modify_output(reply, plan.state, True)
        return reply

    def stream_reply(self, history: ChatHistory, user_input: str | None, options: ChatOptions,
                     settings: dict[str, Any], cancel: threading.Event | None = None, *,
                     impersonate: bool = False, continue_last: bool = False, save: bool = True,
                     replacing: Turn | None = None, images: Sequence[Image] = ()) -> Iterator[ChatUpdate]:
        """Generate the next reply (or continue the last one, or impersonate the user), streaming.
        With impersonate the history is left as it is and `text` is the user's message to edit.
        `replacing`: the reply being regenerated (`history` ends before it): the new reply becomes its
        newest version, the earlier ones kept; stopped before any text, it stays as it was.
        With `save`, a new user message is saved before the reply starts (a crash mid-reply keeps it), and
        the history again when the reply ends (including a stopped reply), never half-written. A reply
        stopped before any text leaves no assistant turn.
        `images`: the new user message's (kept on its turn); every image the prompt keeps from the history
        is sent again. Images the model cannot take raise MediaError before anything is saved."""
        probe = request_from_settings(settings, prompt="")
        plan = self.plan_reply(history, user_input, options, probe, impersonate=impersonate, continue_last=continue_last,
                               images=images)
        prompt, base, prefix = plan.prompt, plan.base, plan.prefix
        request = request_from_settings(settings, prompt=prompt.text, stop=[*probe.stop, *prompt.stop_strings],
                                        thinking_budget=plan.budget, special_tokens=plan.shape.reads_markers,
                                        images=list(prompt.images), **plan.chat_fields())
        if save and ((user_input or "").strip() or images) and not (impersonate or continue_last):
            self.histories.save(base)  # the user's new message, before the reply starts
        text, reasoning = "", ""
        kept = dict(history.turns[-1].metadata) if continue_last else {}  # a continued turn stays what it was
        shown = history.turns[-1].images if continue_last else ()
        if continue_last:
            reasoning = kept.pop("reasoning", "")
        parts = plan.shape.streamer()
        self.app.pool.touch(self.models)  # not idle (--idle-unload)
        for event in self.core.stream(request, cancel, is_chat=True):
            finished = isinstance(event, Finished)
            for piece in parts.finish() if finished else parts.feed(event.text):
                if isinstance(piece, ReasoningDelta):
                    reasoning += piece.text
                elif isinstance(piece, ContentDelta):
                    text += piece.text
            thought = {"reasoning": reasoning} if reasoning else {}
            if finished:
                reply = self.finish_reply(plan, text)
                stopped_empty = event.reason == "cancelled" and not (reply.strip() or reasoning)  # Stop before any text
                if impersonate or (stopped_empty and replacing is None):
                    final = base
                elif stopped_empty:
                    final = base.with_turns((*base.turns, replacing))
                else:
                    final = _with_reply(base, reply, {**kept, **thought}, replacing, shown)
                if save and not impersonate:
                    self.histories.save(final)
                yield ChatUpdate(final, reply, True, prompt.dropped_turns, event.reason, event, reasoning)
                return
            partial = prefix + text
            turn = base if impersonate else _with_reply(base, partial, {**kept, **thought}, replacing, shown)
            yield ChatUpdate(turn, partial, dropped_turns=prompt.dropped_turns, reasoning=reasoning,
                             thinking=bool(reasoning) and not text)

    @staticmethod
    def _reply_base(history: ChatHistory, user_input: str | None, impersonate: bool,
                    continue_last: bool, visible: str | None = None,
                    images: Sequence[Image] = ()) -> tuple[ChatHistory, str]:
        """The history the reply is appended to, and text the reply starts with. ``visible``: how the
        user's message is shown when an extension changed what the model sees; ``images``: the message's."""
        text = (user_input or "").strip()
        if impersonate:
            return history, text + (" " if text else "")
        if continue_last:
            last = history.turns[-1]
            return history.with_turns(history.turns[:-1]), last.content
        shown = {"visible": visible.strip()} if visible and visible.strip() != text else {}
        if not (text or images):
            return history, ""
        return history.with_turn("user", user_input if text else "", images=tuple(images), **shown), ""


def _with_reply(base: ChatHistory, reply: str, metadata: dict[str, Any], replacing: Turn | None,
                images: tuple[Image, ...] = ()) -> ChatHistory:
    """`base` plus the reply: a new turn (a continued one keeps its `images`), or the newest version of the
    turn being regenerated."""
    if replacing is None:
        turn = Turn("assistant", reply, metadata, images)
    else:
        turn = replacing.with_version(reply, **metadata)
    return base.with_turns((*base.turns, turn))

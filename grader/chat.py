"""Chat with a downloaded instruct checkpoint, your stages doing the work; the reference fills the gaps.

    python -m grader.chat DIR [--system "You are brief."]    # a line per turn on stdin; end with Ctrl-D

DIR is as for python -m grader.generate, with a chat template (tokenizer_config.json's chat_template, or
chat_template.jinja) rendered as transformers renders it. The KV cache is kept across turns: a turn feeds
only the tokens after what the cache already holds (-v says how many). Exit 0 at the end of the input,
1 your code failed (one line), 2 bad usage, DIR or template.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import jinja2
import jinja2.ext
import torch
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .options import UsageError, run_main
from .generate import OPTIONS, STAGES, Checkpoint, TextStream, check_options, load, read_checkpoint, sample
from .loader import for_running
from .harness import parse, run_plan

PROG = "python -m grader.chat"
END_OF_TURN = ("<|im_end|>", "<|eot_id|>")  # ChatML's (Qwen, SmolLM) and Llama 3's, where the checkpoint has them


def raise_exception(message: str):
    raise jinja2.TemplateError(message)


def token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: "<s>", {"content": "<s>", ...} or null."""
    return value.get("content") if isinstance(value, dict) else value if isinstance(value, str) else None


def read_template(checkpoint: Checkpoint) -> jinja2.Template:
    """The checkpoint's chat template, compiled as transformers compiles it; UsageError if missing or broken."""
    found = checkpoint.directory / "chat_template.jinja"  # transformers prefers this file to the config's entry
    try:
        template = found.read_text(encoding="utf-8") if found.is_file() else checkpoint.settings.get("chat_template")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{found}: unreadable ({error})") from None
    if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                        None)
    if not isinstance(template, str):
        raise UsageError(f"{checkpoint.directory}: no chat template (tokenizer_config.json's chat_template or "
                         "chat_template.jinja): for a base model use python -m grader.generate")
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                extensions=[jinja2.ext.loopcontrols])
    environment.filters["tojson"] = functools.partial(json.dumps, ensure_ascii=False)  # unlike jinja's, no HTML escapes
    environment.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f))
    try:
        return environment.from_string(template)
    except jinja2.TemplateError as error:
        raise UsageError(f"{checkpoint.directory}: the chat template does not compile: {error}") from None


def render(template: jinja2.Template, checkpoint: Checkpoint, messages: list[dict]) -> str:
    """The conversation as the model reads it, ending where the assistant's reply starts; UsageError if it fails."""
    names = ("bos_token", "eos_token", "unk_token", "pad_token")
    tokens = {name: token_text(checkpoint.settings.get(name)) for name in names}
    try:
        return template.render(messages=messages, tools=None, documents=None, add_generation_prompt=True,
                               **{name: text for name, text in tokens.items() if text is not None})
    except jinja2.TemplateError as error:  # raise_exception("Conversation roles must alternate ...") too
        raise UsageError(f"{checkpoint.directory}: the chat template failed: {error}") from None


def end_of_turn(checkpoint: Checkpoint) -> set[int]:
    """The ids that end a reply: config's and generation_config's eos, the template's eos_token, <|im_end|>."""
    names = [*END_OF_TURN, token_text(checkpoint.settings.get("eos_token"))]
    return checkpoint.eos | {checkpoint.added[name] for name in names if name in checkpoint.added}


@dataclass
class Conversation:
    """The turns so far; it outlives a restart of the work (a stage of yours not finished)."""

    messages: list[dict]
    pending: str | None = None  # the user's line whose reply is not finished
    turns: int = 0
    cached: list[int] = field(default_factory=list)  # the ids the KV caches hold, in order


def lines(stream):
    """The user's turns: one a line, empty lines skipped, "> " shown when a person types them."""
    while True:
        if stream.isatty():
            print("> ", end="", flush=True)
        line = stream.readline()
        if not line:
            return
        if line.strip():
            yield line.rstrip("\r\n")


def reuse(caches, cached: list[int], ids: list[int], model) -> tuple[list, int]:
    """(caches, n): the caches cut back to the n leading ids they share with ``ids``, one id at least left to feed."""
    n = 0
    while n < min(len(cached), len(ids) - 1) and cached[n] == ids[n]:
        n += 1
    if n == 0:
        return model.new_caches(), 0
    for cache in caches:  # keys and values are (B, Hkv, St, Dh): keep the first n positions
        cache.keys, cache.values = cache.keys[:, :, :n], cache.values[:, :, :n]
    return caches, n


def chat(modules, args, checkpoint: Checkpoint, template, conversation: Conversation, out, plan) -> None:
    """Load, then for every line of input: render the conversation, feed what the cache lacks, stream the reply."""
    tokenizer, model = load(modules, checkpoint.directory, args.device, plan)
    caches, conversation.cached, eos = model.new_caches(), [], end_of_turn(checkpoint)
    generator = torch.Generator(args.device).manual_seed(args.seed)
    turns = lines(sys.stdin)
    while True:
        conversation.pending = conversation.pending if conversation.pending is not None else next(turns, None)
        if conversation.pending is None:
            return
        messages = conversation.messages + [{"role": "user", "content": conversation.pending}]
        ids = tokenizer.encode(render(template, checkpoint, messages), allowed_special=True)
        if len(ids) >= model.config.max_seq_len:
            raise UsageError(f"the conversation has {len(ids)} tokens: this model reads at most "
                             f"{model.config.max_seq_len}")
        caches, reused = reuse(caches, conversation.cached, ids, model)
        if args.verbose:
            print(f"turn {conversation.turns + 1}: {len(ids) - reused} new tokens, {reused} reused from the cache",
                  file=sys.stderr)
        new_ids = sample(model, modules("s21_generation"), ids[reused:], caches, args, eos, TextStream(tokenizer, ids),
                         generator, out)
        conversation.cached = (ids + new_ids)[: caches[0].length]  # the last id sampled was never fed
        conversation.messages = messages + [{"role": "assistant", "content": tokenizer.decode(new_ids)}]
        conversation.pending, conversation.turns = None, conversation.turns + 1


def run(argv: list[str], out=sys.stdout) -> int:
    args = parse(PROG, __doc__, argv, {
        "directory": {"type": Path, "help": "an instruct checkpoint directory (as generate's, with a chat template)"},
        "--system": {"help": "a system message to start the conversation"}, **OPTIONS,
        "--max-new-tokens": {"type": int, "default": 256, "help": "at most this many tokens a reply (default 256)"},
    })
    check_options(args)
    checkpoint = read_checkpoint(args.directory.expanduser())
    template = read_template(checkpoint)
    conversation = Conversation([{"role": "system", "content": args.system}] if args.system else [])
    render(template, checkpoint, conversation.messages + [{"role": "user", "content": "Hello"}])  # fails before loading
    plan = for_running(args.impl_path, STAGES)
    return run_plan(plan, lambda modules, _: chat(modules, args, checkpoint, template, conversation, out, plan),
                    args.verbose, PROG, sys.stderr)[0]


main = functools.partial(run_main, PROG, run)  # main(argv=None) -> exit status


if __name__ == "__main__":
    raise SystemExit(main())

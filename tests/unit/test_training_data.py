"""Fine-tuning data (scripts/trainlib: formats, examples, packing, conversations, speed): the
loss on completions only, packing that changes nothing but the padding, and bad data refused in
one line. The tiny Llama and its byte tokenizer (one token per ASCII character) make every
count here exact by hand."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.fixture(scope="module")
def lib(trainlib: SimpleNamespace) -> SimpleNamespace:
    return trainlib


@pytest.fixture(scope="module")
def tiny(lib):
    import torch

    tokenizer = lib.models.byte_tokenizer()
    model = lib.models.tiny_llama(tokenizer, seed=3).eval()
    torch.manual_seed(0)
    return model, tokenizer


def settings_for(lib, *args: str):
    parser = lib.settings.build_parser("test")
    return lib.settings.resolve(parser.parse_args(["--model", "tiny-llama", *args]))


def tokenized(lib, tokenizer, record: dict, kind: str, *, on_prompts: bool = False):
    render = lib.data.chat_renderer(tokenizer, settings_for(lib), offline_model=True)
    pieces = lib.formats.segments(lib.formats.Record("hand", record), kind, render)
    return lib.examples.tokenize(
        pieces, tokenizer, eos=kind != "chat", train_on_prompts=on_prompts, first=kind != "chat"
    )


def hand_loss(model, batch, targets: list[list[int]]) -> float:
    """The mean cross-entropy over the named positions (token t predicted from logits t-1)."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logp = torch.log_softmax(logits.double(), dim=-1)
    losses = [
        -logp[row, t - 1, batch["input_ids"][row, t]] for row, ts in enumerate(targets) for t in ts
    ]
    return float(sum(losses) / len(losses))


@pytest.mark.parametrize("on_prompts", [False, True])
def test_the_loss_is_the_mean_over_completion_tokens(lib, tiny, on_prompts: bool) -> None:
    import torch

    model, tokenizer = tiny
    rows = [("what is one plus one? ", "two."), ("name a colour: ", "blue, like the sky.")]
    batch = lib.examples.PaddedCollator(tokenizer.pad_token_id)(
        [
            lib.examples.ExampleDataset(
                [
                    tokenized(
                        lib,
                        tokenizer,
                        {"prompt": p, "completion": c},
                        "prompt-completion",
                        on_prompts=on_prompts,
                    )
                ]
            )[0]
            for p, c in rows
        ]
    )
    # Byte tokens: the completion is its characters and the end-of-sequence token.
    targets = [list(range(1 if on_prompts else len(p), len(p) + len(c) + 1)) for p, c in rows]
    assert [len(t) for t in targets] == [int((r != -100).sum()) for r in batch["labels"]]
    with torch.no_grad():
        loss = float(model(**batch).loss)
    assert loss == pytest.approx(hand_loss(model, batch, targets), abs=1e-6)


def test_chat_completions_are_the_answers_and_their_end_of_turn(lib, tiny) -> None:
    _, tokenizer = tiny
    messages = [
        {"role": "system", "content": "be brief."},
        {"role": "user", "content": "hi?"},
        {"role": "assistant", "content": "hello."},
        {"role": "user", "content": "and?"},
        {"role": "assistant", "content": "bye."},
    ]
    example = tokenized(lib, tokenizer, {"messages": messages}, "chat")
    trained = [t for t in example.labels if t != -100]
    assert tokenizer.decode(trained) == "hello.</s>\nbye.</s>\n"
    assert tokenizer.decode(example.input_ids).startswith("<|system|>\nbe brief.</s>\n<|user|>")


def test_one_beginning_of_sequence_token_whoever_writes_it(lib, tmp_path) -> None:
    """A tokenizer that adds <s> itself, and a chat template that writes it too (as Llama's do):
    each example starts with exactly one."""
    from tokenizers.processors import TemplateProcessing

    tokenizer = lib.models.byte_tokenizer()
    bos = tokenizer.bos_token_id
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    tokenizer.chat_template = "{{ bos_token }}" + lib.conversations.DEFAULT_CHAT_TEMPLATE
    lines = [CHAT_LINE] * 3
    chat = lib.data.make_sets(
        settings_for(lib, "--dataset", write(tmp_path, "c.jsonl", lines)),
        tokenizer,
        offline_model=True,
    )
    plain = lib.data.make_sets(
        settings_for(lib, "--dataset", write(tmp_path, "p.jsonl", [PROMPT_LINE] * 3)),
        tokenizer,
        offline_model=True,
    )
    for sets in (chat, plain):
        ids = sets.train[0]["input_ids"].tolist()
        assert ids[0] == bos and ids[1] != bos and ids.count(bos) == 1


def test_instruction_and_text_layouts(lib, tiny) -> None:
    _, tokenizer = tiny
    record = {"instruction": "add", "input": "1 and 2", "output": "3"}
    example = tokenized(lib, tokenizer, record, "instruction")
    text = tokenizer.decode(example.input_ids)
    assert text.startswith("### Instruction:\nadd\n\n### Input:\n1 and 2\n\n### Response:\n3")
    assert tokenizer.decode([t for t in example.labels if t != -100]) == "3</s>"
    plain = tokenized(lib, tokenizer, {"text": "all of it"}, "text")
    assert tokenizer.decode([t for t in plain.labels if t != -100]) == "ll of it</s>"


def packed_and_alone(lib, tokenizer):
    texts = ["the master trains.", "a worker syncs its logs over ssh.", "ok", "each rank."]
    examples = [tokenized(lib, tokenizer, {"text": t}, "text") for t in texts]
    return examples, lib.packing.PackedDataset(examples, capacity=64)


def test_a_packed_example_sees_only_itself(lib, tiny) -> None:
    import torch

    model, tokenizer = tiny
    examples, packed = packed_and_alone(lib, tokenizer)
    assert len(packed) == 2  # 19+34+3+11 tokens in bins of 64
    with torch.no_grad():
        for item in packed:
            row = model(
                input_ids=item["input_ids"][None],
                position_ids=item["position_ids"][None],
                use_cache=False,  # as in training: with a cache, transformers would not unpack
            ).logits[0]
            starts = (item["position_ids"] == 0).nonzero().flatten().tolist()
            for begin, end in zip(starts, [*starts[1:], item["input_ids"].numel()], strict=True):
                ids = item["input_ids"][begin:end]
                alone = model(input_ids=ids[None]).logits[0]
                assert torch.allclose(row[begin:end], alone, atol=1e-4)
                assert ids.tolist() in [e.input_ids for e in examples]


def test_packing_gives_the_gradient_of_the_same_examples_unpacked(lib, tiny) -> None:
    import torch

    model, tokenizer = tiny
    examples, packed = packed_and_alone(lib, tokenizer)

    def gradient(batch) -> torch.Tensor:
        model.zero_grad(set_to_none=True)
        model(**batch, use_cache=False).loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    unpacked = lib.examples.PaddedCollator(tokenizer.pad_token_id)(
        list(lib.examples.ExampleDataset(examples))
    )
    together = lib.packing.PackedCollator(tokenizer.pad_token_id)(list(packed))
    assert "attention_mask" not in together
    assert int((together["labels"] != -100).sum()) == int((unpacked["labels"] != -100).sum())
    g_packed, g_unpacked = gradient(together), gradient(unpacked)
    assert float((g_packed - g_unpacked).norm() / g_unpacked.norm()) < 1e-5
    # The batch's tokens are counted without its padding.
    assert lib.packing.real_tokens(together, tokenizer.pad_token_id) == sum(
        len(e.input_ids) for e in examples
    )


def test_best_fit_decreasing_fills_bins(lib) -> None:
    bins = lib.packing.best_fit_decreasing([5, 3, 8, 2, 6, 4], capacity=10)
    assert sorted(i for b in bins for i in b) == list(range(6))
    assert [sum([5, 3, 8, 2, 6, 4][i] for i in b) for b in bins] == [10, 10, 8]


def test_packing_the_builtin_conversations_leaves_under_3_percent_padding(lib, tiny) -> None:
    _, tokenizer = tiny
    settings = settings_for(
        lib,
        "--dataset",
        "builtin-chat",
        "--max-seq-length",
        "256",
        "--batch-size",
        "4",
        "--packing",
    )
    sets = lib.data.make_sets(settings, tokenizer, offline_model=True)
    assert sets.format == "chat"
    assert sets.stats["padding_packed"] < 0.03 < sets.stats["padding_unpacked"]
    assert len(sets.train) < sets.stats["train_examples"] / 1.5


def write(tmp_path: Path, name: str, lines: list[str]) -> str:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


PROMPT_LINE = json.dumps({"prompt": "hi", "completion": "hello"})
CHAT_LINE = json.dumps(
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([CHAT_LINE, "{not json"], r"data.jsonl:2: not a JSON object"),
        (
            [CHAT_LINE, json.dumps({"messages": [{"role": "user", "content": "hi"}]})],
            r"data.jsonl:2: the conversation has no assistant turn",
        ),
        (
            [json.dumps({"messages": [{"role": "bot", "content": "hi"}]})],
            r"data.jsonl:1: messages\[0\].role: 'bot' is not one of system, user, assistant",
        ),
        ([], r"data.jsonl: empty: it holds no examples"),
        (
            [json.dumps({"prompt": "a", "completion": "b"}), json.dumps({"prompt": "c"})],
            r"data.jsonl:2: no 'completion' field \(the data set's format is prompt-completion\)",
        ),
        ([json.dumps({"question": "a"})], r"data.jsonl:1: cannot tell the data set's format"),
        (
            [json.dumps({"prompt": "a", "completion": None})],
            r"data.jsonl:1: completion: expected a string",
        ),
    ],
)
def test_bad_data_is_refused_naming_the_line(lib, tiny, tmp_path, lines, expected) -> None:
    _, tokenizer = tiny
    settings = settings_for(lib, "--dataset", write(tmp_path, "data.jsonl", lines))
    with pytest.raises(lib.Error, match=expected):
        lib.data.make_sets(settings, tokenizer, offline_model=True)


def test_a_conversation_without_a_chat_template_names_the_fix(lib, tmp_path) -> None:
    tokenizer = lib.models.byte_tokenizer()
    tokenizer.chat_template = None
    settings = settings_for(lib, "--dataset", write(tmp_path, "c.jsonl", [CHAT_LINE, CHAT_LINE]))
    with pytest.raises(lib.Error, match="has no chat template: pass --chat-template FILE"):
        lib.data.make_sets(settings, tokenizer, offline_model=False)
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    settings.chat_template = str(template)
    sets = lib.data.make_sets(settings, tokenizer, offline_model=False)
    assert tokenizer.decode(sets.train[0]["input_ids"]) == "user: hi\nassistant: hello\n"
    # A template that refuses a conversation (as Llama 2's does when roles do not alternate).
    template.write_text("{{ raise_exception('Conversation roles must alternate') }}")
    with pytest.raises(
        lib.Error,
        match=r"c.jsonl:1: the chat template refused the conversation: "
        "Conversation roles must alternate",
    ):
        lib.data.make_sets(settings, tokenizer, offline_model=False)


def test_long_examples_are_cut_and_counted_and_promptless_ones_dropped(
    lib, tiny, tmp_path, caplog
) -> None:
    _, tokenizer = tiny
    lines = [
        json.dumps({"prompt": "p" * 10, "completion": "c" * 30}),  # cut, 10 answer tokens left
        json.dumps({"prompt": "p" * 40, "completion": "c"}),  # no answer within 20: dropped
        *[json.dumps({"prompt": "p", "completion": "c"})] * 2,
    ]
    settings = settings_for(
        lib, "--dataset", write(tmp_path, "long.jsonl", lines), "--max-seq-length", "20"
    )
    with caplog.at_level(logging.WARNING):
        sets = lib.data.make_sets(settings, tokenizer, offline_model=True)
    assert "2 of 4 examples are longer than --max-seq-length 20: cut to it (1 of them dropped" in (
        caplog.text
    )
    assert sets.stats["truncated_examples"] == 2 and sets.stats["dropped_examples"] == 1
    assert max(sets.train.lengths()) == 20


def test_bad_data_stops_the_script_with_one_line_and_writes_nothing(
    lib, tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.setattr("warnings.showwarning", __import__("warnings").showwarning)
    out = tmp_path / "out"
    bad = write(tmp_path, "bad.jsonl", [CHAT_LINE, "[1, 2]"])
    code = lib.train_production.main(
        ["--model", "tiny-llama", "--dataset", bad, "--output-dir", str(out)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"train_production.py: error: {bad}:2: expected a JSON object, found list"]
    assert not out.exists()
    # An option only the Trainer checks is refused the same way, before anything is written.
    code = lib.train_production.main(
        ["--model", "tiny-llama", "--dataset", "builtin", "--optim", "adamw_bogus",
         "--output-dir", str(out)]
    )  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "adamw_bogus is not a valid" in err[0]
    assert not out.exists()


@pytest.mark.parametrize(
    ("device", "dtype", "checkpointing", "tf32", "optim", "workers"),
    [
        ({"cuda": False}, "float32", False, False, "adamw_torch", 0),
        (
            {"cuda": True, "capability": (8, 9), "bf16": True},
            "bfloat16",
            True,
            True,
            "adamw_torch_fused",
            2,
        ),
        (
            {"cuda": True, "capability": (7, 5), "bf16": False},
            "float16",
            True,
            False,
            "adamw_torch_fused",
            2,
        ),
    ],
)
def test_auto_settings_suit_the_device(lib, device, dtype, checkpointing, tf32, optim, workers):
    chosen = lib.speed.choose(
        lib.speed.Device(**device),
        dtype="auto",
        gradient_checkpointing=None,
        tf32=None,
        attention="auto",
        optim="auto",
        dataloader_workers=None,
        hub_model=True,
    )
    assert (chosen.dtype, chosen.gradient_checkpointing, chosen.tf32, chosen.optim) == (
        dtype,
        checkpointing,
        tf32,
        optim,
    )
    assert chosen.dataloader_workers == workers and chosen.attention == "sdpa"


def test_settings_a_device_cannot_honour_are_refused(lib) -> None:
    turing = lib.speed.Device(cuda=True, name="RTX 2080", capability=(7, 5), bf16=False)
    common = {
        "gradient_checkpointing": None,
        "tf32": None,
        "attention": "auto",
        "optim": "auto",
        "dataloader_workers": None,
        "hub_model": True,
    }
    with pytest.raises(lib.Error, match="RTX 2080 has no bf16"):
        lib.speed.choose(turing, dtype="bfloat16", explicit=frozenset({"dtype"}), **common)
    with pytest.raises(lib.Error, match="--dtype float16: needs a CUDA GPU"):
        lib.speed.choose(
            lib.speed.Device(cuda=False), dtype="float16", explicit=frozenset({"dtype"}), **common
        )
    # An older defaults file's float16 on a CPU node trains in fp32, as it always did.
    assert lib.speed.choose(lib.speed.Device(cuda=False), dtype="float16", **common).dtype == (
        "float32"
    )


def test_examples_asked_of_a_text_file_are_refused(lib, tiny, tmp_path) -> None:
    _, tokenizer = tiny
    text = tmp_path / "notes.txt"
    text.write_text("plain words\n")
    settings = settings_for(lib, "--dataset", str(text), "--dataset-format", "chat")
    with pytest.raises(lib.Error, match=r"notes.txt: examples come from a \.jsonl or \.json file"):
        lib.data.make_sets(settings, tokenizer, offline_model=True)

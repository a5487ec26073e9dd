"""``lightning-rlhf-tokenizer``: train a small byte-level BPE tokenizer on IMDB reviews.

GPT-2's 50,257-token output layer dominates the cost of a small model on a CPU; an 8k
vocabulary trained on the reviews themselves makes offline SFT and PPO several times faster.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from lightning_rlhf.data.sources import load_reviews
from lightning_rlhf.errors import ArgumentParser, ConfigError, check_output_folder, positive_int, run_console

EOS, PAD = "<|endoftext|>", "<pad>"
MIN_VOCAB = 256 + 2  # the byte alphabet and the two special tokens come before any merge


def train_bpe_tokenizer(texts: Iterator[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style) with ``<|endoftext|>`` (bos/eos) and ``<pad>``."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS, pad_token=PAD
    )


def build_tokenizer(data: str, out: str, vocab_size: int = 8192, max_reviews: int | None = None) -> None:
    """Train on the train split of ``data`` and save to ``out`` via a temporary folder (atomic)."""
    train = load_reviews(data)["train"]
    if max_reviews:
        train = train.select(range(min(max_reviews, len(train))))
    tokenizer = train_bpe_tokenizer(iter(train["text"]), vocab_size)
    target = Path(out)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer.save_pretrained(tmp)
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()  # an empty folder made beforehand: the tokenizer takes its place
    if target.exists():  # another process built it meanwhile: same data, same tokenizer
        shutil.rmtree(tmp)
    else:
        tmp.rename(target)
    print(f"saved a {len(tokenizer)}-token tokenizer trained on {len(train)} reviews to {out}", flush=True)


def _main(argv: list[str]) -> None:
    parser = ArgumentParser(prog="lightning-rlhf-tokenizer", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="IMDB source: hub id, folder or file")
    parser.add_argument("--out", required=True, help="folder to save the tokenizer to")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--max-reviews", type=positive_int, default=None, help="train on the first N")
    args = parser.parse_args(argv)
    if args.vocab_size < MIN_VOCAB:
        parser.error(f"--vocab-size must be at least {MIN_VOCAB} (256 byte tokens, {EOS} and {PAD}), "
                     f"got {args.vocab_size}")
    out = Path(args.out).expanduser()
    check_output_folder(args.out, "--out")
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out '{args.out}' already exists and is not empty; delete it to train a new tokenizer "
                          f"(models trained with the old one need it), or choose another --out")
    build_tokenizer(args.data, args.out, args.vocab_size, args.max_reviews)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``lightning-rlhf-tokenizer``."""
    run_console(_main, "lightning-rlhf-tokenizer", argv)


if __name__ == "__main__":
    main()

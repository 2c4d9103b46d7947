import gzip
import hashlib
import textwrap

import pytest

from dataforge.errors import InputError
from dataforge.tiny.corpus import (
    CORPUS_FILE,
    HELDOUT_FILE,
    Document,
    clean_docstring,
    extract_stdlib_docstrings,
    read_corpus,
    read_heldout_documents,
    split_corpus,
    write_corpus,
)


@pytest.fixture(scope="module")
def committed():
    return read_corpus(CORPUS_FILE)


def test_doctest_sessions_and_their_output_are_removed():
    doc = textwrap.dedent("""\
        Return the sum of two numbers, which is useful in many places of the program.

        >>> add(1, 2)
        3
        >>> add(2,
        ...     5)
        7

        Both arguments must be numbers.""")
    cleaned = clean_docstring(doc)
    assert ">>>" not in cleaned and "..." not in cleaned
    assert "\n3\n" not in cleaned and "7" not in cleaned
    assert cleaned.endswith("Both arguments must be numbers.")


def test_short_docstrings_are_dropped():
    assert clean_docstring("Return self.") == ""


def test_extraction_reads_sources_without_importing_them(tmp_path):
    (tmp_path / "good.py").write_text(
        '"""A module docstring that is long enough to be kept in the corpus, by design of the test."""\n'
        "import sys\nsys.exit(3)\n"  # would end the test run if the module were imported
        "class Thing:\n"
        '    """A class docstring that is long enough to be kept in the corpus, by design of the test."""\n'
        "    def act(self):\n"
        '        """A method docstring that is long enough to be kept in the corpus, by design of the test."""\n'
    )
    (tmp_path / "broken.py").write_text("def (:\n")
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "test_x.py").write_text('"""' + "A test docstring that must be skipped. " * 3 + '"""\n')
    docs = extract_stdlib_docstrings(tmp_path)
    assert [(d.kind, d.name) for d in docs] == [("module", "good"), ("class", "good.Thing"),
                                                 ("function", "good.Thing.act")]


def test_corpus_file_round_trips(tmp_path):
    docs = [Document("a.b", "First line.\n\nSecond paragraph.", "function"), Document("c", "Module text.", "module")]
    path = tmp_path / "c.txt.gz"
    write_corpus(docs, path)
    assert read_corpus(path) == docs
    first = path.read_bytes()
    write_corpus(docs, path)
    assert path.read_bytes() == first  # byte-identical: no timestamp in the gzip header


def test_a_corrupt_corpus_header_names_the_file_and_document(tmp_path):
    path = tmp_path / "bad.txt.gz"
    path.write_bytes(gzip.compress(b"\fmodule a\ntext\n\fnonsense\ntext\n"))
    with pytest.raises(InputError, match=r"bad\.txt\.gz:2"):
        read_corpus(path)


def test_committed_corpus_has_no_form_feeds_or_blank_line_runs(committed):
    assert len(committed) > 3000
    assert all("\f" not in d.text and "\n\n\n" not in d.text for d in committed)
    assert len({d.text for d in committed}) == len(committed)


def test_split_is_by_content_hash_and_about_five_percent(committed):
    train, heldout = split_corpus(committed)
    expected = {d.text for d in committed
                if int.from_bytes(hashlib.sha256(d.text.encode()).digest()[:8], "big") % 100 < 5}
    assert {d.text for d in heldout} == expected
    assert 0.03 < len(heldout) / len(committed) < 0.07
    assert not {d.text for d in train} & expected


def test_heldout_text_file_holds_exactly_the_heldout_documents(committed):
    _, heldout = split_corpus(committed)
    assert read_heldout_documents(HELDOUT_FILE) == [d.text for d in heldout]
    assert 50_000 < HELDOUT_FILE.stat().st_size < 250_000

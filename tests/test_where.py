"""``kd-ref where``: every equation number of SPEC.md and SPEC_seeds.md is cited by a line of kd_ref,
except those of issues still open, which are listed here by name so none is skipped silently."""
import pytest

from kd_ref import cli, where

# equation numbers of the SPEC files that no line of kd_ref cites yet, by the issue that brings them (none now;
# an issue that adds equations to a SPEC lists them here until its code lands)
NOT_YET = {}


@pytest.fixture(scope="module")
def spec(data_dir):
    folder = where.spec_folder()
    if folder is None:
        pytest.fail("SPEC.md not found: set KD_REF_SPEC, or KD_REF_DATA to ../shared/data")
    return folder


def test_every_spec_equation_is_cited_or_listed_as_not_yet(spec):
    known = where.spec_numbers(spec)
    assert {"B.20", "D.5", "2.10", "C.21", "S3.6"} <= known          # range interiors count
    cited = set(where.citations())
    pending = {eq for eqs in NOT_YET.values() for eq in eqs}
    assert pending <= known, f"listed but not in the SPEC: {sorted(pending - known)}"
    assert not (pending & cited), f"cited now, take them off NOT_YET: {sorted(pending & cited)}"
    assert known - cited == pending, f"cited nowhere and not listed: {sorted(known - cited - pending)}"


def test_where_a_spec_number_no_line_cites_yet_exits_1_after_its_spec_line(tmp_path, monkeypatch, capsys):
    # a SPEC that names one more equation than kd_ref implements (as an issue that adds equations does)
    (tmp_path / "SPEC.md").write_text("# thesis\n\n## B\n- **B.12** the update\n", encoding="utf-8")
    (tmp_path / "SPEC_seeds.md").write_text("# seeds\n\n## S3\n- **S3.99** a method still to come\n",
                                            encoding="utf-8")
    monkeypatch.setenv("KD_REF_SPEC", str(tmp_path))
    assert cli.main(["where", "S3.99"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("SPEC_seeds.md:4:") and "no line of kd_ref cites it yet" in captured.err
    assert cli.main(["where", "B.12"]) == 0                  # control: a cited number of the same SPEC resolves


def test_numbers_in_expands_ranges_and_ignores_sections_and_floats():
    assert where.numbers_in("forward (B.2-B.4), (S3.4)–(S3.6) and D.11-D.13") == \
        {"B.2", "B.3", "B.4", "S3.4", "S3.5", "S3.6", "D.11", "D.12", "D.13"}
    assert where.numbers_in("section 3.2.3, section 2.1, Table 4.2, 2.2e-308, 8/3 = 2.67") == set()


def test_citations_read_comments_and_strings_only(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""Docstring citing (C.21)."""\nx = 2.5  # the update (B.12-B.13)\ny = "4.7"\n')
    found = where.citations([f])
    assert sorted(found) == ["4.7", "B.12", "B.13", "C.21"]
    assert found["B.12"][0][1:] == (2, "x = 2.5  # the update (B.12-B.13)")


def test_where_prints_code_lines_and_the_spec_line(spec, capsys):
    assert cli.main(["where", "c.21"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("kd_ref") and "nade.py:" in line and "C.21" in line for line in out)
    assert out[-1].startswith("SPEC.md:") and "C.16–C.27" in out[-1]


def test_where_unknown_and_pending_numbers_exit_1_with_one_line(spec, capsys):
    assert cli.main(["where", "B.99"]) == 1
    err = capsys.readouterr().err
    assert err == "kd-ref where: unknown equation number B.99; SPEC.md and SPEC_seeds.md do not name it\n"
    assert cli.main(["where", "banana"]) == 1
    assert "expected an equation number such as C.21" in capsys.readouterr().err
    assert cli.main(["where"]) == 2
    assert capsys.readouterr().err.count("\n") == 1

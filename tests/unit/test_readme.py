"""The README's settings table is the one the code declares."""
from pathlib import Path

from chatterbox_server.settings import markdown_table

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_is_current():
    readme = (ROOT / "README.md").read_text()
    assert markdown_table() in readme, "run: .venv/bin/python scripts/update_readme.py"


def test_readme_quick_start_is_make_run_and_make_test():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make run" in quick_start and "make test" in quick_start

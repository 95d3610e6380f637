"""The web app's page and the API docs through Flask's test client: public pages, private data, offline assets."""
from __future__ import annotations

import configparser
import glob
import json
import re
from pathlib import Path

import pytest

from chatterbox_server.app import create_app
from workers.ipc.board import Board

PACKAGE = Path(__file__).resolve().parents[2] / "chatterbox_server"


@pytest.fixture()
def client(tmp_path, monkeypatch):
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    Board(str(pool_dir / "board"), 1, create=True).close()      # an empty board: no worker, none needed
    monkeypatch.setenv("CHATTERBOX_POOL_DIR", str(pool_dir))
    return create_app({"data_dir": str(tmp_path / "data"), "api_key": "s3cret",
                       "max_stream_input_chars": 5000}).test_client()


def test_the_pages_are_public_and_the_data_keeps_its_key(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    limits = json.loads(re.search(r"data-limits='([^']*)'", page.get_data(as_text=True)).group(1))
    assert limits["auth_required"] is True and limits["max_stream_input_chars"] == 5000
    for path in ("/web/js/main.js", "/web/app.css", "/docs", "/redoc", "/openapi.json",
                 "/docs/assets/swagger-ui-bundle.js", "/web/vendor/redoc-2.5.4/redoc.standalone.js"):
        assert client.get(path).status_code == 200, path
    assert client.get("/v1/voices").status_code == 401
    assert client.get("/v1/voices", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_html_pages_allow_no_other_origin(client):
    for path in ("/", "/docs", "/redoc"):
        response = client.get(path)
        assert "default-src 'self'" in response.headers["Content-Security-Policy"], path
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", response.get_data(as_text=True)), path
    assert "Content-Security-Policy" not in client.get("/openapi.json").headers


def test_only_the_listed_swagger_files_are_served(client):
    assert client.get("/docs/assets/swagger-ui.css").status_code == 200
    for name in ("core.py", "..%2F__init__.py", "swagger-editor-bundle.js"):
        response = client.get(f"/docs/assets/{name}", headers={"Authorization": "Bearer s3cret"})
        assert response.status_code == 404, name


def test_every_web_file_is_package_data():
    """An installed wheel must carry the whole app: setup.cfg's globs cover every file under web/."""
    config = configparser.ConfigParser()
    config.read(PACKAGE.parent / "setup.cfg")
    patterns = config["options.package_data"]["chatterbox_server"].split()
    packaged = {path for pattern in patterns for path in glob.glob(pattern, root_dir=PACKAGE)}
    present = {str(path.relative_to(PACKAGE)) for path in (PACKAGE / "web").rglob("*")
               if path.is_file() and path.suffix not in (".py", ".pyc")}
    assert present - packaged == set()

from chatterbox_server.runtime.announce import ready_line, urls


def test_urls_for_tcp_binds_only():
    assert urls(["127.0.0.1:4123", "0.0.0.0:7860", "[::]:80", "[::1]:81", "unix:/run/x.sock"]) == [
        "http://127.0.0.1:4123/", "http://127.0.0.1:7860/", "http://127.0.0.1:80/", "http://[::1]:81/"]


def test_ready_line_names_the_web_app():
    line = ready_line("hibari", "hibari", ["127.0.0.1:4123", "127.0.0.1:7860"])
    assert line == ("chatterbox-server is ready (hibari, hibari): open the web app at http://127.0.0.1:4123/ "
                    "(also http://127.0.0.1:7860/), API docs at http://127.0.0.1:4123/docs")
    assert "unix:/s" in ready_line("tone", "tone", ["unix:/s"])

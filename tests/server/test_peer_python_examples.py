"""The peer's own Python examples (Chatterbox-TTS-Extended-Plus, docs/api/schemas/examples/python-examples.md) for
health and TTS, run verbatim against a fresh hibari server (only the host changes). The advanced
generator's own usage names a voice only the peer ships, so the test calls it without one."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.server

SETUP = '''
import requests
import json
import os
from pathlib import Path
from typing import Optional, List, Dict, Any

# API Configuration
API_BASE = "http://localhost:7860"
API_TIMEOUT = 300  # 5 minutes for generation requests

class ChatterboxClient:
    def __init__(self, base_url: str = API_BASE, timeout: int = API_TIMEOUT):
        self.base_url = base_url.rstrip('/')
        self.timeout = timeout
        self.session = requests.Session()

    def _make_request(self, method: str, endpoint: str, **kwargs) -> requests.Response:
        """Make HTTP request with error handling."""
        url = f"{self.base_url}{endpoint}"
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
            response.raise_for_status()
            return response
        except requests.exceptions.RequestException as e:
            print(f"Request failed: {e}")
            if hasattr(e, 'response') and e.response is not None:
                print(f"Response status: {e.response.status_code}")
                print(f"Response body: {e.response.text}")
            raise
'''
HEALTH_SIMPLE = '''
def check_health() -> Dict[str, Any]:
    """Check API health status."""
    response = requests.get(f"{API_BASE}/api/v1/health")
    return response.json()

# Usage
try:
    health = check_health()
    print(f"API Status: {health['status']}")
    print(f"Uptime: {health['uptime']}")
except Exception as e:
    print(f"Health check failed: {e}")
'''
HEALTH_CLIENT = '''
client = ChatterboxClient()

def check_api_health(client: ChatterboxClient) -> bool:
    """Check if API is healthy and ready."""
    try:
        response = client._make_request("GET", "/api/v1/health")
        data = response.json()
        return data.get("status") == "healthy"
    except Exception as e:
        print(f"API health check failed: {e}")
        return False

# Usage
if check_api_health(client):
    print("✅ API is healthy and ready")
else:
    print("❌ API is not responding")
'''
TTS_BASIC = '''
def generate_tts_basic(text: str, output_path: str = "speech.wav") -> bool:
    """Generate basic TTS without voice cloning."""
    payload = {
        "text": text,
        "export_formats": ["wav"]
    }

    try:
        response = requests.post(
            f"{API_BASE}/api/v1/tts",
            json=payload,
            stream=True
        )
        response.raise_for_status()

        with open(output_path, 'wb') as f:
            for chunk in response.iter_content(chunk_size=8192):
                f.write(chunk)

        print(f"✅ TTS generated: {output_path}")
        return True
    except Exception as e:
        print(f"❌ TTS generation failed: {e}")
        return False

# Usage
generate_tts_basic("Hello, this is a test of the TTS API.")
'''
TTS_GENERATOR = '''
class TTSGenerator:
    def __init__(self, client: ChatterboxClient):
        self.client = client

    def generate(
        self,
        text: str,
        reference_audio_filename: Optional[str] = None,
        exaggeration: float = 0.5,
        temperature: float = 0.75,
        seed: int = 0,
        speed_factor: float = 1.0,
        speed_factor_library: str = "auto",
        export_formats: List[str] = None,
        output_path: Optional[str] = None,
        get_metadata: bool = False
    ) -> Dict[str, Any]:
        """Generate TTS with advanced parameters."""

        if export_formats is None:
            export_formats = ["wav"]

        payload = {
            "text": text,
            "exaggeration": exaggeration,
            "temperature": temperature,
            "seed": seed,
            "speed_factor": speed_factor,
            "speed_factor_library": speed_factor_library,
            "export_formats": export_formats,
            "disable_watermark": True
        }

        if reference_audio_filename:
            payload["reference_audio_filename"] = reference_audio_filename

        try:
            if get_metadata:
                # Get JSON response with metadata
                response = self.client._make_request(
                    "POST",
                    "/api/v1/tts?response_mode=url",
                    json=payload
                )
                return response.json()
            else:
                # Stream audio directly
                response = self.client._make_request(
                    "POST",
                    "/api/v1/tts",
                    json=payload,
                    stream=True
                )

                if output_path:
                    with open(output_path, 'wb') as f:
                        for chunk in response.iter_content(chunk_size=8192):
                            f.write(chunk)
                    print(f"✅ Advanced TTS saved: {output_path}")

                return {"success": True, "file_path": output_path}

        except Exception as e:
            print(f"❌ Advanced TTS failed: {e}")
            return {"success": False, "error": str(e)}

'''


def run(server, tmp_path, monkeypatch, *blocks: str) -> dict:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "peer_example"}
    for block in blocks:
        exec(compile(block.replace("http://localhost:7860", server.extended_base), "peer", "exec"), namespace)
    return namespace


def test_health_examples(hibari_server, tmp_path, monkeypatch, capsys):
    run(hibari_server, tmp_path, monkeypatch, SETUP, HEALTH_SIMPLE, HEALTH_CLIENT)
    out = capsys.readouterr().out
    assert "API Status: healthy" in out and "Uptime: " in out and "API is healthy and ready" in out


def test_basic_tts_example(hibari_server, tmp_path, monkeypatch, capsys):
    run(hibari_server, tmp_path, monkeypatch, SETUP, TTS_BASIC)
    assert "TTS generated: speech.wav" in capsys.readouterr().out
    assert (tmp_path / "speech.wav").read_bytes()[:4] == b"RIFF"


def test_advanced_tts_generator(hibari_server, tmp_path, monkeypatch):
    namespace = run(hibari_server, tmp_path, monkeypatch, SETUP, TTS_GENERATOR)
    tts = namespace["TTSGenerator"](namespace["ChatterboxClient"](hibari_server.extended_base))
    result = tts.generate(text="This is advanced TTS with speed control and high quality.", speed_factor=1.2,
                          speed_factor_library="audiostretchy", temperature=0.8, exaggeration=0.6, seed=42,
                          output_path="advanced_speech.wav")
    assert result == {"success": True, "file_path": "advanced_speech.wav"}
    assert (tmp_path / "advanced_speech.wav").read_bytes()[:4] == b"RIFF"
    meta = tts.generate(text="Metadata, please.", seed=42, get_metadata=True)
    assert meta["success"] is True and meta["generation_seed_used"] == 42

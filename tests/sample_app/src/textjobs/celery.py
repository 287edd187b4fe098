"""A plain Celery app: broker and result store from Celery's own environment variables
(CELERY_BROKER_URL, CELERY_RESULT_BACKEND), which celery-fleet's .env files carry."""

import json
import os
import urllib.request

from celery import Celery

app = Celery("textjobs")
app.conf.task_routes = {"textjobs.vectorize": {"queue": "tj-vectors"},
                        "textjobs.complete": {"queue": "tj-completions"}}
app.conf.task_acks_late = True

API = os.environ.get("TEXTJOBS_API", "http://127.0.0.1:8080/v1")


def _post(path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{API}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@app.task(name="textjobs.vectorize")
def vectorize(text: str) -> list:
    return _post("/embeddings", {"model": "any", "input": [text]})["data"][0]["embedding"]


@app.task(name="textjobs.complete")
def complete(prompt: str) -> str:
    return _post("/completions", {"model": "any", "prompt": prompt})["choices"][0]["text"]

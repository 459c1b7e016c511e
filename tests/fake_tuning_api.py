"""Test double of an OpenAI-style fine-tuning API (files + fine_tuning/jobs) on 127.0.0.1.

    with FakeTuningAPI() as api:           # api.base_url == "http://127.0.0.1:<port>/v1"
        ...                                 # api.files, api.jobs, api.requests record what came in

Implements POST /v1/files (multipart, purpose=fine-tune; validates chat JSONL),
POST /v1/fine_tuning/jobs, GET /v1/fine_tuning/jobs/<id> (each poll advances
validating_files -> queued -> running -> succeeded, emitting metric events),
GET /v1/fine_tuning/jobs/<id>/events and POST /v1/fine_tuning/jobs/<id>/cancel.
A base model whose name contains "fail" makes the job fail while running; a missing
or wrong bearer key gets 401.
"""
from __future__ import annotations

import json
import threading
import time
import uuid

from flask import Flask, jsonify, request
from werkzeug.serving import make_server

STATES = ("validating_files", "queued", "running", "running", "succeeded")


class FakeTuningAPI:
    def __init__(self, key: str = "test-key", steps: int = 4):
        self.key, self.steps = key, steps
        self.files: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        self.requests: list[str] = []
        self.app = self._app()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.base_url = f"http://127.0.0.1:{self.server.server_port}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeTuningAPI":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()

    # ---------------------------------------------------------------- the API
    def _app(self) -> Flask:
        app = Flask("fake_tuning_api")

        @app.before_request
        def auth():
            self.requests.append(f"{request.method} {request.path}")
            if request.headers.get("Authorization") != f"Bearer {self.key}":
                return jsonify(error={"message": "invalid api key"}), 401

        @app.post("/v1/files")
        def upload():
            if request.form.get("purpose") != "fine-tune" or "file" not in request.files:
                return jsonify(error={"message": "need purpose=fine-tune and a file"}), 400
            raw = request.files["file"].read().decode("utf-8")
            lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
            for n, line in enumerate(lines, 1):
                roles = [m.get("role") for m in line.get("messages", [])]
                if "assistant" not in roles:
                    return jsonify(error={"message": f"line {n}: no assistant message"}), 400
            file_id = f"file-{uuid.uuid4().hex[:8]}"
            self.files[file_id] = {"id": file_id, "filename": request.files["file"].filename,
                                   "lines": lines, "bytes": len(raw)}
            return jsonify(id=file_id, object="file", bytes=len(raw), purpose="fine-tune")

        @app.post("/v1/fine_tuning/jobs")
        def create():
            body = request.get_json()
            if body.get("training_file") not in self.files:
                return jsonify(error={"message": "training_file not found"}), 400
            job_id = f"ftjob-{uuid.uuid4().hex[:8]}"
            tokens = sum(len(json.dumps(line)) // 4 for line in self.files[body["training_file"]]["lines"])
            self.jobs[job_id] = {"id": job_id, "object": "fine_tuning.job", "model": body["model"],
                                 "status": STATES[0], "polls": 0, "body": body, "events": [],
                                 "fine_tuned_model": None, "trained_tokens": None, "tokens": tokens,
                                 "hyperparameters": {"n_epochs": body.get("hyperparameters", {}).get("n_epochs", 3)},
                                 "error": None, "created_at": int(time.time())}
            return jsonify(self._public(self.jobs[job_id]))

        @app.get("/v1/fine_tuning/jobs/<job_id>")
        def retrieve(job_id):
            job = self.jobs.get(job_id)
            if job is None:
                return jsonify(error={"message": "no such job"}), 404
            self._advance(job)
            return jsonify(self._public(job))

        @app.get("/v1/fine_tuning/jobs/<job_id>/events")
        def events(job_id):
            job = self.jobs[job_id]
            return jsonify(object="list", data=list(reversed(job["events"])), has_more=False)

        @app.post("/v1/fine_tuning/jobs/<job_id>/cancel")
        def cancel(job_id):
            job = self.jobs[job_id]
            job["status"] = "cancelled"
            return jsonify(self._public(job))

        return app

    def _advance(self, job: dict) -> None:
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return
        job["polls"] += 1
        job["status"] = STATES[min(job["polls"], len(STATES) - 1)]
        if job["status"] == "running":
            if "fail" in job["model"]:
                job["status"] = "failed"
                job["error"] = {"code": "invalid_training_file", "message": "training failed: bad base model"}
                return
            start = len(job["events"]) + 1
            for step in range(start, min(start + self.steps // 2, self.steps) + 1):
                job["events"].append({"object": "fine_tuning.job.event", "type": "metrics",
                                      "created_at": time.time() + step * 1e-3,
                                      "message": f"Step {step}/{self.steps}",
                                      "data": {"step": step, "total_steps": self.steps,
                                               "train_loss": 2.0 / step, "valid_loss": 2.2 / step}})
        if job["status"] == "succeeded":
            job["fine_tuned_model"] = f"ft:{job['model']}:csforge:{job['body'].get('suffix', '')}:{job['id'][-4:]}"
            job["trained_tokens"] = job["tokens"] * int(job["hyperparameters"]["n_epochs"]
                                                        if job["hyperparameters"]["n_epochs"] != "auto" else 3)

    @staticmethod
    def _public(job: dict) -> dict:
        keys = ("id", "object", "model", "status", "fine_tuned_model", "trained_tokens", "hyperparameters",
                "error", "created_at")
        return {k: job[k] for k in keys}

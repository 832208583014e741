"""A TorchServe 0.12 handler that serves a tier doing the same work per request as our server.

Used only by the benchmark (``python -m tierscale_server.bench``) to compare against TorchServe.
Per request it parses and validates the JSON body and encodes the user's history with the
tier's encoders (no user-vector cache). It then scores all items, masks the history, takes the
top k, applies the randomised adjacent swap and builds the same response body. The tier name comes from the
``tier.json`` extra file packed into the model archive.
"""

from __future__ import annotations

import json
import logging
import os

log = logging.getLogger(__name__)


class TierHandler:
    def __init__(self) -> None:
        self.service = None

    def initialize(self, context) -> None:
        from tierscale_server.config import ServerConfig
        from tierscale_server.scorer import TierScorer
        from tierscale_server.service import ModelService

        model_dir = context.system_properties.get("model_dir")
        with open(os.path.join(model_dir, "tier.json")) as handle:
            settings = json.load(handle)
        config = ServerConfig(tier=settings["tier"], model_name=settings["model_name"], user_cache_size=0,
                              torch_threads=settings["torch_threads"])
        service = ModelService(config)
        service.scorer = TierScorer(config.tier, device=settings.get("device"), user_cache_size=0,
                                    torch_threads=config.torch_threads)
        service.status = "ready"
        self.service = service

        import torch

        log.info("tier %s loaded in the TorchServe worker: %d torch threads, device %s",
                 config.tier, torch.get_num_threads(), service.scorer.device)

    def handle(self, data, context):
        from tierscale_server.service import ApiError

        queries, responses = [], [None] * len(data)
        for row, request in enumerate(data):
            body = request.get("body") or request.get("data")
            try:
                if isinstance(body, (bytes, bytearray)):
                    body = json.loads(body.decode("utf-8"))
                if not isinstance(body, dict):
                    raise ApiError(400, "request body must be a JSON object")
                queries.append((row, self.service.parse_query(body)))
            except (ApiError, ValueError) as error:
                responses[row] = {"code": getattr(error, "status", 400), "message": str(error)}

        if queries:
            scored = self.service.scorer.score([query for _, query in queries])
            for (row, _), result in zip(queries, scored):
                responses[row] = self.service.respond(result)
        return [json.dumps(response) for response in responses]

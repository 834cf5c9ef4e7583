"""``coda-hf push``: publish a saved tokenizer, prior or pipeline with its model card."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser("push", help="push a saved model directory to the Hub with a model card")
    p.add_argument("--model", required=True, help="saved tokenizer, prior or pipeline directory")
    p.add_argument("--repo-id", required=True, help="ORG/NAME on the Hub")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--metrics", default=None, help="metrics.json from `coda-hf evaluate` (default: MODEL/metrics.json if present)")
    p.add_argument("--base-model", default=None, help="the source VAE's Hub id, for the card's base_model")
    p.add_argument("--dataset", action="append", default=None, help="dataset id used for training (repeatable)")
    p.add_argument("--license", default="apache-2.0")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in token / HF_TOKEN)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..hub import HubPushError, push_to_hub

    try:
        url = push_to_hub(
            args.model, args.repo_id, private=args.private or None, token=args.token, metrics=args.metrics,
            base_model=args.base_model, datasets=args.dataset, license=args.license,
        )
    except HubPushError as e:  # the Hub refused (usage errors raise: exit code 2)
        logger.error("%s", e)
        return 1
    logger.info("pushed to %s", url)
    return 0

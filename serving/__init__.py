"""The sentiment and routing service: serves the production version over HTTP and follows
every promotion and rollback without a restart.

Reads the registry and writes shadow counts through ``store``; scores through ``training``;
speaks Label Studio's ML backend protocol (plain HTTP, ``ml_backend``) but knows no Label
Studio package and no Celery: annotation events go to a callback the caller wires.
"""

from serving.app import create_app
from serving.errors import LimitExceeded, NotReady, ReloadError, ServingError
from serving.follower import SELF_CHECK_TEXTS, ModelFollower, ServedModel
from serving.keys import hash_key, new_key
from serving.routing import DECISIONS, ConversationBook, Decision, RoutingPolicy, Turn, decide
from serving.service import Limits, Service, ServiceOptions, scorer_factory

__all__ = [
    "DECISIONS",
    "SELF_CHECK_TEXTS",
    "ConversationBook",
    "Decision",
    "LimitExceeded",
    "Limits",
    "ModelFollower",
    "NotReady",
    "ReloadError",
    "RoutingPolicy",
    "ServedModel",
    "Service",
    "ServiceOptions",
    "ServingError",
    "Turn",
    "create_app",
    "decide",
    "hash_key",
    "new_key",
    "scorer_factory",
]

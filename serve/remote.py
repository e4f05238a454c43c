"""Awaiting a call to another deployment, with Ray's failures turned into the endpoint's answers.

    result = await call_deployment(handle.predict.remote(...), timeout_s, "ingress")   # or ApiError

A replica that dies while it holds a request (SIGKILL, OOM kill, a crashed process) makes
the caller's ``DeploymentResponse`` raise ``RayActorError`` (``ActorDiedError``,
``ActorUnavailableError``); a deployment with no live replica raises
``DeploymentUnavailableError``; a full queue ``BackPressureError``. The caller is the replica
in front (the router before the ingress, the ingress before the model), which is still alive
and answers for the dead one: 503 JSON with ``Retry-After``. Were the error left to
propagate, Serve's proxy would answer a plain-text 500 instead.

The request is not retried on another replica: a request that kills replicas (a hostile
file that exhausts memory, say) would then kill them one after another.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from serve.schemas import RETRY_AFTER, ApiError

logger = logging.getLogger("ray.serve")


async def call_deployment(
    response: Any, timeout_s: float, callee: str, timeout_error: str = "timeout", failure_error: str = "internal_error"
) -> Any:
    """The result of ``response`` (a ``DeploymentResponse``) within ``timeout_s`` seconds.

    Raises ApiError: 503 ``overloaded`` (the callee's queue is full), 503
    ``replica_unavailable`` (the replica holding the request died, or none is alive), 504
    ``timeout_error`` (no answer in time; the call is cancelled), 500 ``failure_error`` (the
    callee raised). ``callee`` names the deployment in messages ("ingress", "model").
    """
    from ray.exceptions import RayActorError, RayTaskError
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    async def wait() -> Any:
        return await response

    try:
        return await asyncio.wait_for(wait(), timeout=timeout_s)
    except asyncio.TimeoutError:
        response.cancel()
        raise ApiError(504, timeout_error, f"the {callee} did not answer within {timeout_s} s") from None
    except BackPressureError:
        raise ApiError(503, "overloaded", f"the {callee}'s request queue is full; retry shortly", RETRY_AFTER) from None
    except (RayActorError, DeploymentUnavailableError) as exc:
        # Checked before RayTaskError: Ray can raise one class that is both.
        logger.warning("%s replica unavailable: %s", callee, type(exc).__name__)
        raise ApiError(
            503,
            "replica_unavailable",
            f"the {callee} replica handling this request stopped; retry (another replica will answer)",
            RETRY_AFTER,
        ) from None
    except RayTaskError as exc:
        logger.error("%s call failed: %s", callee, exc)
        raise ApiError(500, failure_error, f"the {callee} failed on this request; see the replica log") from None

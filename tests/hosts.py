"""Planned hosts for tests that need no inventory: a plan from a host shape, wrapped the way
the deploy wraps it (celery_fleet.fleetplan.PlannedHost), with a fixed broker."""

from celery_fleet.fleetplan import Broker, PlannedHost
from celery_fleet.settings import resolve
from celery_fleet.sizing import ALL_ROLES, Gpu, HostFacts, plan_host

BROKER = Broker("10.0.0.5", 6379, "s3cr3t-Passw0rd_xyz")
BROKER_URL = "redis://:s3cr3t-Passw0rd_xyz@10.0.0.5:6379/0"
MODEL_SHA256 = "5eed" * 16  # the model file planned hosts have (model_mb)


def planned_host(ram_mb=4096, cores=1, gpus=(), data=None, roles=ALL_ROLES, name="h",
                 address="10.0.0.9", visibility_timeout_s=2400, model_mb=None) -> PlannedHost:
    """model_mb: the size of the model file (llm_model_path, llm_model_host_path)."""
    settings = resolve(name, data or {})
    model = {} if model_mb is None else {"llm_model_mb": model_mb, "llm_model_format": "gguf",
                                         "llm_model_sha256": MODEL_SHA256}
    facts = HostFacts(ram_mb, cores, tuple(Gpu(i, v) for i, v in enumerate(gpus)), **model)
    # the secrets a deploy would read from their sources: here the values themselves
    return PlannedHost(name, tuple(roles), plan_host(name, facts, settings, tuple(roles)),
                       settings, address, BROKER, (address,), visibility_timeout_s,
                       embedding_api_key=settings["embedding_api_key"],
                       llm_api_key=settings["llm_api_key"], runs_redis="broker" in roles)

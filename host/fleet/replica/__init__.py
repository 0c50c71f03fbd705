"""Several ``edgeloop serve`` replicas on one store and one broker.

Every replica serves the REST API, the dashboard, artifacts and ingest; exactly one at a time drives the
rollouts: the holder of the controller lease (``store.leases``: a row per lease, taken on the database's
clock, renewed every third of its length, fencing every write that leads to commands). Each ingest worker
has a slot (lease ``ingest-<n>``, MQTT client id ``edgeloop-ingest-<n>``), so a replica that dies leaves
behind a persistent MQTT session whose lease expires: another replica adopts the slot, resumes the session
and drains it (Mosquitto keeps queueing a shared subscription's messages for a member that is gone), then
ends it. The modules, by job: ``lease`` (one held lease), ``keeper`` (the thread that renews, takes over and
adopts), ``identity`` (the replica id and the checks made at start).
"""

from host.fleet.replica.identity import default_replica_id
from host.fleet.replica.keeper import CONTROLLER, Drainable, ReplicaKeeper
from host.fleet.replica.lease import HeldLease

__all__ = ["CONTROLLER", "Drainable", "HeldLease", "ReplicaKeeper", "default_replica_id"]

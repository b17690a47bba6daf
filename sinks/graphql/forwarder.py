"""Forwarding one batch of decoded records to the backend, with the public client's id caches.

For a batch: createConfiguration once per (device, vehicle, fleet, organization) not yet cached;
createMessage, batched, for the message descriptors not yet cached; then the data mutations packed by
count and samples per request. Requests go one at a time, in record order, so one batch is one request
in flight. The result says which records failed and why; everything else was accepted by the backend.
No Kafka here: the consumer shell (`fleetstream.sinks.graphql.consumer`) feeds it per partition.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from fleetstream.config import GraphQLSinkSettings
from fleetstream.sinks.graphql import payloads as p
from fleetstream.sinks.graphql.client import GraphQLClient
from fleetstream.sinks.graphql.exceptions import BackendRejected, BackendUnavailable, InvalidRecord

__all__ = ["Failure", "Forwarder"]

log = logging.getLogger(__name__)

Batch = Sequence[tuple[str, dict[str, Any]]]
"""(record type, decoded record) pairs, as they came off one partition."""


@dataclass(frozen=True)
class Failure:
    """Why a record was not forwarded: the dead letter's error code, reason and attempt count."""

    code: str
    reason: str
    attempts: int = 1


@dataclass(frozen=True)
class _Ids:
    """The ids one batch uses, by record index: its configuration key, configuration id and message id."""

    keys: dict[int, p.ConfigKey]
    configs: dict[int, str]
    messages: dict[int, str]


class Forwarder:
    """Sends batches through `client`, caching configuration and message ids across batches."""

    def __init__(self, client: GraphQLClient, options: GraphQLSinkSettings | None = None) -> None:
        self.client = client
        self.options = options or GraphQLSinkSettings()
        self.configuration_ids: dict[p.ConfigKey, str] = {}
        self.message_ids: dict[tuple[str, ...], str] = {}
        self.network_id_field: str | None = None
        """configurationId or vehicleId, learnt once from the backend (the client's introspection probe)."""
        self.records_forwarded = 0

    def forward(self, batch: Batch) -> dict[int, Failure]:
        """Forward `batch`; failures by index into it. Raises `BackendAuthError` (nothing may be committed)."""
        failures: dict[int, Failure] = {}
        keys = self._resolve_configurations(batch, failures)
        # Ids fixed for this batch: a rejection below may drop cache entries that later requests still use.
        configs = {index: self.configuration_ids[key] for index, key in keys.items()}
        messages = self._resolve_messages(batch, keys, failures)
        by_type: dict[str, list[int]] = {}
        for index in keys:
            if index not in failures:
                by_type.setdefault(batch[index][0], []).append(index)
        ids = _Ids(keys, configs, messages)
        self._send_signals(batch, by_type.get("signal_batch", []), ids, failures)
        self._send_dtcs(batch, by_type.get("dtc_batch", []), ids, failures)
        self._send_gps(batch, by_type.get("gps_batch", []), ids, failures)
        self._send_network_stats(batch, by_type.get("network_stats", []), ids, failures)
        for index, (record_type, _) in enumerate(batch):
            if record_type not in ("signal_batch", "dtc_batch", "gps_batch", "network_stats"):
                failures[index] = Failure("unsupported", f"the backend has no mutation for {record_type} records")
        self.records_forwarded += len(batch) - len(failures)
        return failures

    def _send(self, request: p.GraphQLRequest, indices: Iterable[int], failures: dict[int, Failure]) -> Any:
        """The response data, or None after recording a failure for every record the request carried."""
        try:
            return self.client.execute(request)
        except BackendRejected as exc:
            failure = Failure("rejected", str(exc))
        except BackendUnavailable as exc:
            failure = Failure("unavailable", str(exc), exc.attempts)
        log.warning("%s", failure.reason)
        for index in indices:
            failures.setdefault(index, failure)
        return None

    def _resolve_configurations(self, batch: Batch, failures: dict[int, Failure]) -> dict[int, p.ConfigKey]:
        keys: dict[int, p.ConfigKey] = {}
        for index, (_, record) in enumerate(batch):
            try:
                keys[index] = p.configuration_key(record)
            except InvalidRecord as exc:
                failures[index] = Failure(exc.code, exc.reason)
        for key in dict.fromkeys(keys.values()):
            if key not in self.configuration_ids:
                members = [i for i, k in keys.items() if k == key]
                data = self._send(p.configuration_request(key), members, failures)
                if data is not None:
                    self.configuration_ids[key] = str(data["createConfiguration"]["id"])
        return {i: k for i, k in keys.items() if i not in failures}

    def _resolve_messages(self, batch: Batch, keys: dict[int, p.ConfigKey],
                          failures: dict[int, Failure]) -> dict[int, str]:
        descriptors: dict[int, p.MessageDescriptor] = {}
        for index in keys:
            if batch[index][0] in ("signal_batch", "dtc_batch"):
                try:
                    descriptors[index] = p.message_descriptor(batch[index][1])
                except InvalidRecord as exc:
                    failures[index] = Failure(exc.code, exc.reason)
        new = list({d.cache_key: d for d in descriptors.values() if d.cache_key not in self.message_ids}.values())
        for chunk in p.chunked(new, self.options.batch_size):
            wanted = {d.cache_key for d in chunk}
            members = [i for i, d in descriptors.items() if d.cache_key in wanted]
            data = self._send(p.message_request(chunk), members, failures)
            if data is not None:
                self.message_ids.update(p.match_message_ids(chunk, data))
        return self._message_ids_of(descriptors, failures)

    def _message_ids_of(self, descriptors: dict[int, p.MessageDescriptor],
                        failures: dict[int, Failure]) -> dict[int, str]:
        ids: dict[int, str] = {}
        for index, descriptor in descriptors.items():
            if index in failures:
                continue
            message_id = self.message_ids.get(descriptor.cache_key)
            if message_id is None:
                failures[index] = Failure("rejected", f"createMessage returned no id for {descriptor.name!r}")
            else:
                ids[index] = message_id
        return ids

    def _parts(self, batch: Batch, indices: list[int], failures: dict[int, Failure], build: Any) -> list[p.Part]:
        parts: list[p.Part] = []
        for index in indices:
            try:
                parts.extend(build(index, batch[index][1]))
            except InvalidRecord as exc:
                failures[index] = Failure(exc.code, exc.reason)
        return parts

    def _send_packed(self, parts: list[p.Part], make: Any, ids: _Ids, failures: dict[int, Failure]) -> None:
        for group in p.pack(parts, self.options.batch_size, self.options.max_samples_per_request):
            records = {part.record for part in group}
            if self._send(make(group), records, failures) is None:
                self._forget(records, ids.keys)

    def _forget(self, records: Iterable[int], keys: dict[int, p.ConfigKey]) -> None:
        # A backend that lost its configurations (reset, restore) refuses our cached ids forever; dropping
        # them makes the next batch resolve fresh ones instead of dead-lettering everything.
        for index in records:
            self.configuration_ids.pop(keys[index], None)
        self.message_ids.clear()

    def _send_signals(self, batch: Batch, indices: list[int], ids: _Ids, failures: dict[int, Failure]) -> None:
        max_samples = self.options.max_samples_per_request
        parts = self._parts(batch, indices, failures, lambda i, r: p.signal_parts(
            i, r, ids.configs[i], ids.messages[i], max_samples))
        self._send_packed(parts, p.signal_request, ids, failures)

    def _send_dtcs(self, batch: Batch, indices: list[int], ids: _Ids, failures: dict[int, Failure]) -> None:
        max_samples = self.options.max_samples_per_request
        parts = self._parts(batch, indices, failures, lambda i, r: p.dtc_parts(
            i, r, ids.configs[i], ids.messages[i], max_samples))
        self._send_packed(parts, p.dtc_request, ids, failures)

    def _send_gps(self, batch: Batch, indices: list[int], ids: _Ids, failures: dict[int, Failure]) -> None:
        by_configuration: dict[str, list[p.Part]] = {}
        for part in self._parts(batch, indices, failures, p.gps_points):
            by_configuration.setdefault(ids.configs[part.record], []).append(part)
        for configuration_id, points in by_configuration.items():
            for request, chunk in p.gps_requests(configuration_id, points, self.options.max_gps_points):
                records = {part.record for part in chunk}
                if self._send(request, records, failures) is None:
                    self._forget(records, ids.keys)

    def _send_network_stats(self, batch: Batch, indices: list[int], ids: _Ids, failures: dict[int, Failure]) -> None:
        if indices and self.network_id_field is None:
            self.network_id_field = self._detect_network_id_field()
        for index in indices:
            try:
                self._send_one_network_stats(index, batch[index][1], ids.keys[index], ids.configs[index], failures)
            except InvalidRecord as exc:
                failures[index] = Failure(exc.code, exc.reason)

    def _send_one_network_stats(self, index: int, record: dict[str, Any], key: p.ConfigKey, configuration_id: str,
                                failures: dict[int, Failure]) -> None:
        field = self.network_id_field or "configurationId"
        try:
            self.client.execute(p.network_stats_request(record, configuration_id, key.vehicle_id, field))
            return
        except BackendRejected as exc:
            if field not in exc.message:
                failures[index] = Failure("rejected", str(exc))
                return
        except BackendUnavailable as exc:
            failures[index] = Failure("unavailable", str(exc), exc.attempts)
            return
        # The backend does not know the id field we used (introspection disabled or stale): the client's
        # fallback is the other field, remembered when it works.
        other = "vehicleId" if field == "configurationId" else "configurationId"
        request = p.network_stats_request(record, configuration_id, key.vehicle_id, other)
        if self._send(request, [index], failures) is not None:
            self.network_id_field = other

    def _detect_network_id_field(self) -> str:
        try:
            return p.network_id_field(self.client.execute(p.detect_request()))
        except (BackendRejected, BackendUnavailable) as exc:
            log.info("network-stats id field probe failed (%s); assuming configurationId", exc)
            return "configurationId"

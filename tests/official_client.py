"""What the official `IcsAnalytics` client (`ics-wivi-analytics-ingest` 26.3.3) sends the backend, rebuilt from
its code, for the seed README's examples (shared/seeds/000_0d2b86ae41defc7a.txt) and for inputs beyond them.

The expected payloads below are written out by hand from that client's source; each comment names the place
that decides the value. They were checked once by running that client against
`fleetstream.sinks.graphql.contract_backend` (same
variables, null for null); the client is not a dependency of this project and the tests do not run it.

Its request building, in short (paths under `analytics_ingest/internal/`):
- `utils/configuration.py`: createConfiguration with `ConfigurationSchema.model_dump()`: deviceId, fleetId,
  organizationId, vehicleId as ints.
- `utils/message.py` `create_message`: one MessageInput per new message, `var.get(key)` for arbId,
  networkName, ecuName, ecuId, requestCode, fileId, messageDate (a key the input leaves out is null), name =
  `messageName or name`.
- `utils/signal_buffer_manager.py` + `schemas/signal_schema.py`: `SignalSchema.dict()`: configurationId and
  messageId as ints, paramType normalised (RawValue→RAW, State Encoded→ENCODED, NUMBER→RAW, string→STRING,
  else TEXT; empty→null), signalType upper-cased (empty→null), `paramId = variables.get("paramId", "")`, data
  points `{value: float|null, svalue: str|null, time: str}` with the time text as given; a number is first
  turned into `datetime.fromtimestamp(t, tz=utc).isoformat()` (`utils/base_buffer_manager.py convert_times`).
- `utils/dtc_buffer_manager.py` + `schemas/dtc_schema.py`: `fileId`/`messageDate` = `dtc.get(key, "")`,
  configurationId as the returned string, messageId as an int, items `DTCSchema.model_dump()` whose `time`
  is a pydantic `datetime` serialised with `isoformat()` (`utils/serialization.py`), extended/snapshot null
  unless given.
- `utils/gps_buffer_manager.py` + `schemas/gps_schema.py`: configurationId as the returned string, every
  `GPSSchema` field (null when not given), time as pydantic's datetime `isoformat()`, availability flags
  null when not given.
- `utils/network.py` + `schemas/network_schema.py`: `model_dump(exclude_none=True)` in field order, with
  configurationId coerced to int, maxTime/minTime as given, rate a float.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "BEYOND_README_DTCS",
    "BEYOND_README_GPS",
    "BEYOND_README_NETSTATS",
    "BEYOND_README_SIGNALS",
    "README_DTC",
    "README_GPS",
    "README_NETSTATS_CAN1",
    "README_NETSTATS_JACOBS",
    "README_SIGNAL",
    "differences",
    "expected_beyond_readme",
    "expected_readme",
    "sent_objects",
]

# --- the seed README's examples, verbatim -------------------------------------------------------------------

README_SIGNAL: dict[str, Any] = {
    'name': 'VehicleIdentificationNumber',
    'unit': '',
    'messageName': 'BusQuery_IDDecoding_F190_VSSAL',
    'networkName': 'Cluster_6_TestTool',
    'ecuName': '',
    'arbId': '',
    'fileId': '1234',
    'paramType': 'TEXT',
    'signalType': 'DID',
    'messageDate': '2025-07-15T01:40:00.000000',
    'paramId': 'F190',
    'data': [{
        'value': 0.04,
        'time': '1970-01-07T18:28:54Z',
        'svalue': ''
    },
    ]
}
README_DTC: dict[str, Any] = {
    'messageName': 'DTC Message99B049',
    'name': 'DTC Message99B049',
    'networkName': 'Cluster_6_TestTool',
    'ecuName': 'VCU_Android_GAS',
    'ecuId': '14DA80F1',
    'messageDate': '2025-07-15T01:42:20.385429',
    'fileId': '1234',
    'data': [{
        'dtcId': 'B19B0-49',
        'description': 'Head-Up Display - Internal Electronic Failure',
        'status': '2F',
        'time': '2025-07-15T01:42:15.979524'
    },
    ]
}
README_GPS: dict[str, Any] = {
    "time": "2025-07-28T12:34:56.789Z",
    "latitude": 37.7749,
    "longitude": -122.4194,
    "accuracy": 10.5,
    "altitude": 120.3,
    "speed": 45.2,
    "bearing": 75.0,
    "available": {
        "accuracy": True,
        "altitude": True,
        "bearing": False,
        "speed": True,
        "time": True
    }
}
README_NETSTATS_CAN1: dict[str, Any] = {
    "name": "CAN1",
    "vehicleId": 456,
    "uploadId": 1,
    "totalMessages": 1000,
    "matchedMessages": 950,
    "unmatchedMessages": 50,
    "errorMessages": 0,
    "longMessageParts": 0,
    "rate": 500.0
}
README_NETSTATS_JACOBS: dict[str, Any] = {
    'name': 'jacobs',
    'vehicleId': 9539366,
    'uploadId': 4255,
    'totalMessages': 222,
    'matchedMessages': 139,
    'unmatchedMessages': 0,
    'errorMessages': 27,
    'longMessageParts': 21,
    'maxTime': '2025-08-01T11:06:53.947Z',
    'minTime': '2025-08-01T11:06:53.947Z',
    'rate': 59.44
}

Objects = dict[str, list[dict[str, Any]]]
"""Input objects by mutation: createConfiguration inputs, MessageInputs, SignalInputs, UpsertDtcDataInputs,
upsertGpsData inputs (configurationId and points), CreateNetworkStatsInputs."""


def expected_readme(ids: dict[str, int], config_id: str, message_id: Callable[[str], str]) -> Objects:
    """The official client's input objects for the README examples, for a client built with `ids`
    (device_id, vehicle_id, fleet_id, org_id) whose configuration got `config_id`."""
    return {
        # configuration.py: ConfigurationSchema.model_dump(), ints in its field order.
        "createConfiguration": [{"deviceId": ids["device_id"], "fleetId": ids["fleet_id"],
                                 "organizationId": ids["org_id"], "vehicleId": ids["vehicle_id"]}],
        "createMessage": [
            # message.py: var.get(key); ecuId and requestCode are not in the README signal: null.
            {"arbId": "", "name": "BusQuery_IDDecoding_F190_VSSAL", "networkName": "Cluster_6_TestTool",
             "ecuName": "", "ecuId": None, "requestCode": None, "fileId": "1234",
             "messageDate": "2025-07-15T01:40:00.000000"},
            # The README DTC has no arbId and no requestCode: null.
            {"arbId": None, "name": "DTC Message99B049", "networkName": "Cluster_6_TestTool",
             "ecuName": "VCU_Android_GAS", "ecuId": "14DA80F1", "requestCode": None, "fileId": "1234",
             "messageDate": "2025-07-15T01:42:20.385429"},
        ],
        # signal_schema.py: ids as ints, paramType "TEXT" is not in the mapping and stays TEXT, the time as given.
        "upsertSignalData": [{
            "configurationId": int(config_id), "messageId": int(message_id("BusQuery_IDDecoding_F190_VSSAL")),
            "name": "VehicleIdentificationNumber", "unit": "", "paramType": "TEXT", "paramId": "F190",
            "signalType": "DID", "data": [{"value": 0.04, "svalue": "", "time": "1970-01-07T18:28:54Z"}]}],
        # dtc_buffer_manager.py: configurationId the returned string, messageId an int; the naive microsecond
        # time goes through pydantic's datetime and isoformat() unchanged.
        "upsertDtcData": [{
            "fileId": "1234", "configurationId": config_id, "messageId": int(message_id("DTC Message99B049")),
            "messageDate": "2025-07-15T01:42:20.385429",
            "data": [{"dtcId": "B19B0-49", "status": "2F",
                      "description": "Head-Up Display - Internal Electronic Failure",
                      "time": "2025-07-15T01:42:15.979524", "extended": None, "snapshot": None}]}],
        # gps_buffer_manager.py: "...56.789Z" parsed by pydantic and re-printed by isoformat().
        "upsertGpsData": [{"configurationId": config_id, "data": [{
            "time": "2025-07-28T12:34:56.789000+00:00", "latitude": 37.7749, "longitude": -122.4194,
            "accuracy": 10.5, "altitude": 120.3, "speed": 45.2, "bearing": 75.0,
            "available": {"accuracy": True, "altitude": True, "bearing": False, "speed": True, "time": True}}]}],
        # network.py: the client's own configuration id as an int (the input's vehicleId is used only by
        # backends keyed by vehicleId), exclude_none drops fileId, minTime and maxTime of CAN1.
        "createNetworkStats": [
            {"name": "CAN1", "configurationId": int(config_id), "uploadId": 1, "totalMessages": 1000,
             "matchedMessages": 950, "unmatchedMessages": 50, "errorMessages": 0, "longMessageParts": 0,
             "rate": 500.0},
            {"name": "jacobs", "configurationId": int(config_id), "uploadId": 4255, "totalMessages": 222,
             "matchedMessages": 139, "unmatchedMessages": 0, "errorMessages": 27, "longMessageParts": 21,
             "maxTime": "2025-08-01T11:06:53.947Z", "minTime": "2025-08-01T11:06:53.947Z", "rate": 59.44},
        ],
    }


# --- beyond the README: numbers as times, offsets, keys left out or None, empty lists ---------------------------

BEYOND_README_SIGNALS: list[dict[str, Any]] = [
    {"name": "S", "unit": "rpm", "data": [{"value": 1, "time": 1753706096.789}, {"value": 2, "time": 1753706096},
                                          {"svalue": "x", "time": "2025-07-28 12:34:56"}]},
    {"name": "EngineSpeed", "unit": "rpm", "messageName": "M2", "requestCode": "22F190", "ecuId": None,
     "paramId": None, "paramType": "RawValue", "signalType": "pid",
     "data": [{"value": 812.5, "svalue": None, "time": "2025-07-28T12:34:56.123456+02:00"}]},
]
BEYOND_README_DTCS: list[dict[str, Any]] = [
    {"name": "D", "data": [
        {"dtcId": "P0300", "status": "2F", "description": "", "time": "2025-07-15T01:42:15.979Z"},
        {"dtcId": "P0301", "status": "2F", "description": "d", "time": 1752543735.979524},
        {"dtcId": "P0302", "status": "2F", "description": "d", "time": "2025-07-15T03:42:15+02:00"}]},
    {"messageName": "D2", "fileId": None, "messageDate": None, "arbId": "7DF", "data": [
        {"dtcId": "P0420", "status": "08", "description": "cat", "time": "2025-07-15T01:42:15Z", "extended": [],
         "snapshot": [{"bytes": "0102"}]}]},
]
BEYOND_README_GPS: list[dict[str, Any]] = [
    {"time": "2025-07-28T12:34:56Z", "available": {"speed": True}}, {"time": 1753706096.5},
    {"time": 1753706096789}, {"time": "2025-07-28"}]
BEYOND_README_NETSTATS: dict[str, Any] = {
    "name": "CAN2", "fileId": "", "totalMessages": 10, "matchedMessages": 9, "unmatchedMessages": 1,
    "errorMessages": 0, "longMessageParts": 0, "rate": 1, "minTime": "2025-08-01T11:06:53.947123+00:00"}

_NO_MESSAGE_KEYS = {"arbId": None, "networkName": None, "ecuName": None, "ecuId": None, "requestCode": None,
                    "fileId": None, "messageDate": None}
_NO_POSITION = {"latitude": None, "longitude": None, "accuracy": None, "altitude": None, "speed": None,
                "bearing": None}


def expected_beyond_readme(ids: dict[str, int], config_id: str, message_id: Callable[[str], str]) -> Objects:
    """The official client's input objects for the BEYOND_README_* inputs."""
    return {
        "createConfiguration": [{"deviceId": ids["device_id"], "fleetId": ids["fleet_id"],
                                 "organizationId": ids["org_id"], "vehicleId": ids["vehicle_id"]}],
        "createMessage": [  # message.py: var.get(key) is null for every key left out or None
            {**_NO_MESSAGE_KEYS, "name": "S"},
            {**_NO_MESSAGE_KEYS, "name": "M2", "requestCode": "22F190"},
            {**_NO_MESSAGE_KEYS, "name": "D"},
            {**_NO_MESSAGE_KEYS, "name": "D2", "arbId": "7DF"},
        ],
        "upsertSignalData": [
            # convert_times: numbers via datetime.fromtimestamp(t, utc).isoformat(); text as given; values as
            # floats; paramId left out is "" (variables.get("paramId", "")), paramType/signalType empty are null.
            {"configurationId": int(config_id), "messageId": int(message_id("S")), "name": "S", "unit": "rpm",
             "paramType": None, "paramId": "", "signalType": None, "data": [
                 {"value": 1.0, "svalue": None, "time": "2025-07-28T12:34:56.789000+00:00"},
                 {"value": 2.0, "svalue": None, "time": "2025-07-28T12:34:56+00:00"},
                 {"value": None, "svalue": "x", "time": "2025-07-28 12:34:56"}]},
            # paramId None is null; RawValue -> RAW; "pid" -> PID; the offset time as given.
            {"configurationId": int(config_id), "messageId": int(message_id("M2")), "name": "EngineSpeed",
             "unit": "rpm", "paramType": "RAW", "paramId": None, "signalType": "PID",
             "data": [{"value": 812.5, "svalue": None, "time": "2025-07-28T12:34:56.123456+02:00"}]},
        ],
        "upsertDtcData": [
            # dtc.get("fileId", ""): left out is ""; pydantic re-prints "Z" as "+00:00" with microseconds, keeps
            # an offset, and a number is epoch seconds (convert_times) printed with "+00:00".
            {"fileId": "", "configurationId": config_id, "messageId": int(message_id("D")), "messageDate": "",
             "data": [
                 {"dtcId": "P0300", "status": "2F", "description": "", "time": "2025-07-15T01:42:15.979000+00:00",
                  "extended": None, "snapshot": None},
                 {"dtcId": "P0301", "status": "2F", "description": "d", "time": "2025-07-15T01:42:15.979524+00:00",
                  "extended": None, "snapshot": None},
                 {"dtcId": "P0302", "status": "2F", "description": "d", "time": "2025-07-15T03:42:15+02:00",
                  "extended": None, "snapshot": None}]},
            # fileId and messageDate given as None are null; an empty extended list given is [].
            {"fileId": None, "configurationId": config_id, "messageId": int(message_id("D2")), "messageDate": None,
             "data": [{"dtcId": "P0420", "status": "08", "description": "cat", "time": "2025-07-15T01:42:15+00:00",
                       "extended": [], "snapshot": [{"bytes": "0102"}]}]},
        ],
        # GPSSchema: every field, null when not given, flags left out null; numbers by pydantic's rule (seconds up
        # to 2e10, milliseconds beyond); a date alone is midnight, naive.
        "upsertGpsData": [{"configurationId": config_id, "data": [
            {"time": "2025-07-28T12:34:56+00:00", **_NO_POSITION,
             "available": {"accuracy": None, "altitude": None, "bearing": None, "speed": True, "time": None}},
            {"time": "2025-07-28T12:34:56.500000+00:00", **_NO_POSITION, "available": None},
            {"time": "2025-07-28T12:34:56.789000+00:00", **_NO_POSITION, "available": None},
            {"time": "2025-07-28T00:00:00", **_NO_POSITION, "available": None}]}],
        # exclude_none keeps fileId "" (given), drops uploadId and maxTime; rate 1 becomes 1.0.
        "createNetworkStats": [{"name": "CAN2", "configurationId": int(config_id), "fileId": "", "totalMessages": 10,
                                "matchedMessages": 9, "unmatchedMessages": 1, "errorMessages": 0,
                                "longMessageParts": 0, "minTime": "2025-08-01T11:06:53.947123+00:00", "rate": 1.0}],
    }


def sent_objects(calls: Callable[[str], list[dict[str, Any]]]) -> Objects:
    """The input objects the backend received (`ContractBackend.calls`), grouped as `Objects`."""
    return {
        "createConfiguration": [c["input"] for c in calls("createConfiguration")],
        "createMessage": [m for c in calls("createMessage") for m in c["input"]["messages"]],
        "upsertSignalData": [s for c in calls("upsertSignalData") for s in c["input"]["signals"]],
        "upsertDtcData": [d for c in calls("upsertDtcData") for d in c["input"]],
        "upsertGpsData": [c["input"] for c in calls("upsertGpsData")],
        "createNetworkStats": [c["input"] for c in calls("createNetworkStats")],
    }


def differences(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Every place where `actual` differs from `expected`: a missing or extra key, another type (null is not
    "", 1 is not 1.0, "1" is not 1), another value or another length; [] when they are the same."""
    if type(expected) is not type(actual):
        return [f"{path or '.'}: expected {expected!r} ({type(expected).__name__}), "
                f"sent {actual!r} ({type(actual).__name__})"]
    if isinstance(expected, dict):
        out = [f"{path}.{k}: expected {expected[k]!r}, not sent" for k in expected if k not in actual]
        out += [f"{path}.{k}: sent {actual[k]!r}, the official client does not send it" for k in actual
                if k not in expected]
        for key in expected:
            if key in actual:
                out += differences(expected[key], actual[key], f"{path}.{key}")
        return out
    if isinstance(expected, list):
        if len(expected) != len(actual):
            return [f"{path}: expected {len(expected)} items, sent {len(actual)}: {actual!r}"]
        return [d for i, (e, a) in enumerate(zip(expected, actual, strict=True))
                for d in differences(e, a, f"{path}[{i}]")]
    return [] if expected == actual else [f"{path}: expected {expected!r}, sent {actual!r}"]

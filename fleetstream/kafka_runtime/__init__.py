"""Files of the local Kafka broker's runtime, shipped with the package: `pom.xml` (the official Apache Kafka jars
and the log4j2 binding, resolved once through Maven) and `log4j2.properties` (the broker's logging).

Used by `fleetstream.stack`, which finds them relative to this folder; there is no Python code here.
"""

from pathlib import Path

__all__ = ["LOG4J_CONFIG", "POM", "RUNTIME_DIR"]

RUNTIME_DIR = Path(__file__).resolve().parent
POM = RUNTIME_DIR / "pom.xml"
LOG4J_CONFIG = RUNTIME_DIR / "log4j2.properties"

# One image for every fleetstream part; docker-compose.yml picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fleetstream ./fleetstream
COPY schemas ./schemas
COPY producers ./producers
COPY streams ./streams
COPY sinks ./sinks
COPY api ./api
COPY benchmarks ./benchmarks
RUN pip install --no-cache-dir ".[all]"
ENV FLEETSTREAM_HOME=/data
VOLUME /data
ENTRYPOINT ["fleetstream"]
CMD ["--help"]

-- One Postgres for the stack, two databases: Prefect's API and MLflow's runs and registry (docker/compose.yaml).
-- Runs once, when the data volume is empty. Local-stack passwords: change them (and compose.yaml) for anything shared.
CREATE USER prefect WITH PASSWORD 'prefect';
CREATE DATABASE prefect OWNER prefect;
CREATE USER mlflow WITH PASSWORD 'mlflow';
CREATE DATABASE mlflow OWNER mlflow;

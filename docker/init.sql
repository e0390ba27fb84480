-- Run by the postgres image on its first start (an empty data volume): the table that
-- docker/pgcloak.docker.yaml protects, as `pgcloak demo` creates it.
CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE, first_name text, last_name text, plan text);

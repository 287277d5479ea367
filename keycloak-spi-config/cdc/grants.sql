-- The database side of the CDC source (Debezium's PostgreSQL connector), run once by the owner of Keycloak's
-- tables (the role Keycloak connects with), in Keycloak's database. Idempotent. The server needs
-- wal_level=logical (a restart), and the connector's password is set apart from this file:
--   ALTER ROLE keycloak_cdc PASSWORD '...';
-- Keycloak's schema must exist first (start Keycloak once).

-- The connector's role: it may log in and open a replication connection, nothing more. Reading the
-- changes of the published tables needs no SELECT on them (snapshot.mode=no_data reads no rows).
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'keycloak_cdc') THEN
    CREATE ROLE keycloak_cdc LOGIN REPLICATION CONNECTION LIMIT 5;
  END IF;
END
$$;
-- Only needed where CONNECT was revoked from PUBLIC (hardened databases).
DO $$
BEGIN
  EXECUTE format('GRANT CONNECT ON DATABASE %I TO keycloak_cdc', current_database());
END
$$;

-- A one-row table the connector updates every heartbeat (heartbeat.action.query). It is in the publication,
-- so each beat is a change the slot must pass: the slot's confirmed position then moves on even while only
-- other tables (or other databases of the server) change, and PostgreSQL can release the WAL it held.
CREATE SCHEMA IF NOT EXISTS cdc;
CREATE TABLE IF NOT EXISTS cdc.heartbeat (
  id integer PRIMARY KEY,
  beat_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO cdc.heartbeat (id) VALUES (1) ON CONFLICT (id) DO NOTHING;
GRANT USAGE ON SCHEMA cdc TO keycloak_cdc;
GRANT UPDATE (beat_at) ON cdc.heartbeat TO keycloak_cdc;

-- An attribute row's key is its own id: with the default replica identity a DELETE carries only that key,
-- and the user it belonged to is lost. FULL makes PostgreSQL log the whole old row (user_id included).
-- user_entity (key id), user_group_membership (group_id, user_id) and user_role_mapping (role_id, user_id)
-- hold the user id in their keys and keep the default.
ALTER TABLE public.user_attribute REPLICA IDENTITY FULL;

-- The publication: only the tables a hint needs, created by their owner (the connector's role could not).
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'keycloak_users_cdc') THEN
    CREATE PUBLICATION keycloak_users_cdc FOR TABLE
      public.user_entity,
      public.user_attribute,
      public.user_group_membership,
      public.user_role_mapping,
      public.component_config,
      cdc.heartbeat;
  END IF;
END
$$;
-- A publication made before the federation components' configuration joined it (a sync's end mark).
DO $$
BEGIN
  IF NOT EXISTS (
    SELECT FROM pg_publication_tables
    WHERE pubname = 'keycloak_users_cdc' AND schemaname = 'public' AND tablename = 'component_config'
  ) THEN
    ALTER PUBLICATION keycloak_users_cdc ADD TABLE public.component_config;
  END IF;
END
$$;

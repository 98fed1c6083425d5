-- The gateway store's schema: one file for SQLite and PostgreSQL.
-- gateway/store/sql.py replaces the three dialect words before running it:
--   @ID@     SQLite: INTEGER PRIMARY KEY AUTOINCREMENT
--            PostgreSQL: BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY
--   @BLOB@   BLOB | BYTEA
--   @FLOAT@  REAL | DOUBLE PRECISION  (times: POSIX seconds, UTC)
-- Booleans are INTEGER 0/1 in both. JSON columns hold text.
-- Bump SCHEMA_VERSION in sql.py when this changes.

CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS counters (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS users (
    name           TEXT PRIMARY KEY,
    password_hash  TEXT NOT NULL,
    totp_secret    TEXT NOT NULL,
    upstream_user  TEXT NOT NULL,
    role           TEXT NOT NULL,
    break_glass    INTEGER NOT NULL,
    created_at     @FLOAT@ NOT NULL,
    last_totp_step BIGINT NOT NULL
);

-- one row per failed log-in; failure_keys serializes writers of one (scope, key)
CREATE TABLE IF NOT EXISTS failures (
    id    @ID@,
    scope TEXT NOT NULL,
    key   TEXT NOT NULL,
    at    @FLOAT@ NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_key ON failures (scope, key, at);

CREATE TABLE IF NOT EXISTS failure_keys (
    scope TEXT NOT NULL,
    key   TEXT NOT NULL,
    n     BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE IF NOT EXISTS lockouts (
    scope TEXT NOT NULL,
    key   TEXT NOT NULL,
    until @FLOAT@ NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    mode       TEXT NOT NULL,
    created_at @FLOAT@ NOT NULL,
    expires_at @FLOAT@ NOT NULL,
    created_by TEXT NOT NULL,
    used_at    @FLOAT@,
    used_by    TEXT
);

CREATE TABLE IF NOT EXISTS devices (
    device_id          TEXT PRIMARY KEY,
    mode               TEXT NOT NULL,
    image_id           TEXT NOT NULL,
    record             TEXT NOT NULL,
    enrolled_at        @FLOAT@ NOT NULL,
    status             TEXT NOT NULL,
    ek_cert            TEXT NOT NULL,
    last_attest_at     @FLOAT@,
    last_attest_result TEXT,
    last_attest_step   TEXT,
    last_attest_reason TEXT
);
-- the web console's device pages: newest first with search, and "needing attention",
-- answered from these indexes rather than from rows holding the enrollment record
CREATE INDEX IF NOT EXISTS devices_enrolled ON devices (enrolled_at, device_id, image_id);
CREATE INDEX IF NOT EXISTS devices_state ON devices (status, last_attest_result, last_attest_at);

CREATE TABLE IF NOT EXISTS attestations (
    id         @ID@,
    device_id  TEXT NOT NULL,
    at         @FLOAT@ NOT NULL,
    result     TEXT NOT NULL,
    step       TEXT,
    reason     TEXT,
    session_id TEXT
);
CREATE INDEX IF NOT EXISTS attestations_device ON attestations (device_id, id);

CREATE TABLE IF NOT EXISTS images (
    image_id   TEXT PRIMARY KEY,
    reference  @BLOB@ NOT NULL,
    signature  @BLOB@ NOT NULL,
    added_at   @FLOAT@ NOT NULL,
    added_by   TEXT NOT NULL,
    revoked_at @FLOAT@
);

CREATE TABLE IF NOT EXISTS nonces (
    nonce      @BLOB@ PRIMARY KEY,
    issued_at  @FLOAT@ NOT NULL,
    expires_at @FLOAT@ NOT NULL,
    used_at    @FLOAT@
);
CREATE INDEX IF NOT EXISTS nonces_expiry ON nonces (expires_at);

CREATE TABLE IF NOT EXISTS locks (
    id          @ID@,
    target_kind TEXT NOT NULL,
    target      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  @FLOAT@ NOT NULL,
    created_by  TEXT NOT NULL,
    expires_at  @FLOAT@,
    removed_at  @FLOAT@,
    removed_by  TEXT
);

CREATE TABLE IF NOT EXISTS sessions (
    id               TEXT PRIMARY KEY,
    user_name        TEXT NOT NULL,
    device_id        TEXT,
    source           TEXT NOT NULL,
    replica          TEXT NOT NULL,
    started_at       @FLOAT@ NOT NULL,
    recording        TEXT NOT NULL,
    ended_at         @FLOAT@,
    end_reason       TEXT,
    bytes_in         BIGINT NOT NULL,
    bytes_out        BIGINT NOT NULL,
    recording_sha256 TEXT,
    break_glass      INTEGER NOT NULL,
    budget_used      @FLOAT@ NOT NULL,
    anomaly_score    @FLOAT@ NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_started ON sessions (started_at);

CREATE TABLE IF NOT EXISTS alerts (
    id          @ID@,
    at          @FLOAT@ NOT NULL,
    rule        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    action      TEXT NOT NULL,
    detail      TEXT NOT NULL,
    user_name   TEXT,
    device_id   TEXT,
    session_id  TEXT,
    acked_at    @FLOAT@,
    acked_by    TEXT,
    ack_comment TEXT
);

CREATE TABLE IF NOT EXISTS output_totals (
    user_name TEXT NOT NULL,
    day       TEXT NOT NULL,
    total     BIGINT NOT NULL,
    PRIMARY KEY (user_name, day)
);

CREATE TABLE IF NOT EXISTS baselines (
    user_name TEXT PRIMARY KEY,
    data      TEXT NOT NULL
);

-- the audit chain: seq 1, 2, 3, ... with no gaps; at_us is the time in microseconds
CREATE TABLE IF NOT EXISTS audit (
    seq       BIGINT PRIMARY KEY,
    at_us     BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    event     TEXT NOT NULL,
    data      TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
-- the newest entries of one kind (gateway.start at start-up, console filters)
CREATE INDEX IF NOT EXISTS audit_event ON audit (event, seq);

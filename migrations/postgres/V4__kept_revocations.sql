-- Revocations outlive erasure: when an operator erases a user, the revoked devices
-- are remembered here (until the certificate they presented expires; NULL: it never
-- does), so a stolen device that was revoked before the erasure cannot register
-- again.
CREATE TABLE kept_revocations (
    user_id    BYTEA  NOT NULL CHECK (octet_length(user_id) = 32),
    device_id  BYTEA  NOT NULL CHECK (octet_length(device_id) = 32),
    revoked_at BIGINT NOT NULL,
    -- Unix milliseconds; NULL while the certificate has no expiry.
    until      BIGINT,
    PRIMARY KEY (user_id, device_id)
);

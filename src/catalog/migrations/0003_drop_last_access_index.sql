-- Nothing reads artifacts by last access, and every access report had to
-- move the row in this index as well.
DROP INDEX IF EXISTS artifacts_last_access;

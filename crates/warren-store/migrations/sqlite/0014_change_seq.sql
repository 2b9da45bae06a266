-- A change sequence on workspaces, so the lifecycle-policy reconciler reads only what changed
-- since its last pass instead of every row. SQLite runs one write transaction at a time, so the
-- counter (bumped inside the writing transaction by these triggers) follows commit order: a
-- reader that saw sequence N has seen every change numbered N or less.

CREATE TABLE change_seq (
    id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO change_seq (id, n) VALUES (1, 0);

ALTER TABLE workspaces ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX workspaces_change_seq ON workspaces (change_seq);

-- Removed workspace records, by the sequence number of their removal.
CREATE TABLE workspace_removals (
    seq          INTEGER NOT NULL PRIMARY KEY,
    workspace_id TEXT    NOT NULL
);

CREATE TRIGGER workspaces_change_insert AFTER INSERT ON workspaces
BEGIN
    UPDATE change_seq SET n = n + 1 WHERE id = 1;
    UPDATE workspaces SET change_seq = (SELECT n FROM change_seq WHERE id = 1) WHERE id = NEW.id;
END;

-- The inner update changes change_seq, so the WHEN keeps it from firing again.
CREATE TRIGGER workspaces_change_update AFTER UPDATE ON workspaces
WHEN NEW.change_seq = OLD.change_seq
BEGIN
    UPDATE change_seq SET n = n + 1 WHERE id = 1;
    UPDATE workspaces SET change_seq = (SELECT n FROM change_seq WHERE id = 1) WHERE id = NEW.id;
END;

CREATE TRIGGER workspaces_change_delete AFTER DELETE ON workspaces
BEGIN
    UPDATE change_seq SET n = n + 1 WHERE id = 1;
    INSERT INTO workspace_removals (seq, workspace_id)
        VALUES ((SELECT n FROM change_seq WHERE id = 1), OLD.id);
END;

UPDATE workspaces SET change_seq = 0;

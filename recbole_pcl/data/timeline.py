"""Every user's interactions in time order, and the window of each user's latest interactions that is
reserved for downstream labels (T1 never trains on it)."""

import numpy as np

MIN_T1_LENGTH = 3  # leave-one-out needs a train, a valid and a test target


class Timeline:
    """The interactions sorted by user and time (stable, so ties keep the file's order).

    Attributes:
        inter: the sorted interaction table (RecBole ids).
        users: each user's id, in the table's order; ``starts``/``lengths``: where their rows are.
        position: each row's position in its user's history (0 = first).
        window_start: per row, its user's first position reserved for labels: the last
            ``label_window`` interactions, never more than all but :data:`MIN_T1_LENGTH`.
    """

    def __init__(self, inter_feat, uid_field, time_field, iid_field, label_window):
        self.inter = inter_feat.sort_values([uid_field, time_field], kind="stable").reset_index(drop=True)
        self.iid_field = iid_field
        uid = self.inter[uid_field].to_numpy()
        self.starts = np.flatnonzero(np.r_[True, uid[1:] != uid[:-1]])
        self.lengths = np.diff(np.r_[self.starts, len(uid)])
        self.users = uid[self.starts]
        self.position = np.arange(len(uid)) - np.repeat(self.starts, self.lengths)
        reserve = np.clip(self.lengths - MIN_T1_LENGTH, 0, label_window)
        self.window_start = np.repeat(self.lengths - reserve, self.lengths)

    @property
    def items(self):
        return self.inter[self.iid_field].to_numpy()

    def user_of(self, rows):
        """The user index (into :attr:`users`) of each row of the sorted table."""
        return np.searchsorted(self.starts, rows, side="right") - 1

    def sequences(self, user_index, ends, n):
        """Item sequences (left-aligned, zero-padded) of users ``user_index`` ending before rows
        ``ends`` of the sorted table: each user's last ``n`` items before it."""
        ends = np.asarray(ends, dtype=np.int64)
        begin = np.maximum(self.starts[user_index], ends - n)
        length = ends - begin
        offsets = np.arange(n)
        index = np.minimum(begin[:, None] + offsets, len(self.inter) - 1)
        seq = np.where(offsets < length[:, None], self.items[index], 0) if len(ends) else np.zeros((0, n), np.int64)
        return seq.astype(np.int64), length

    def latest(self, user_index, n):
        """Each user's latest ``n`` items (all of their history): what a served model sees."""
        return self.sequences(user_index, self.starts[user_index] + self.lengths[user_index], n)

    def first_reserved(self, rows_ok):
        """Per user, the first row in the label window for which ``rows_ok`` holds, or -1."""
        rows = np.flatnonzero(rows_ok & (self.position >= self.window_start))
        first = np.full(len(self.starts), -1)
        users, index = np.unique(self.user_of(rows), return_index=True)
        first[users] = rows[index]
        return first

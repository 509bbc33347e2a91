package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bridgeworks/bridge/mapping"
)

// Resolution actions for a conflict.
const (
	ResolveLink    = "link"    // link anyway
	ResolveDismiss = "dismiss" // keep the identifiers apart and take the conflict off the list
)

func operatorActor(operator string) string {
	if operator = strings.TrimSpace(operator); operator == "" {
		return "operator"
	}
	return operator
}

// loadLink reads a link and the cluster it belongs to, inside a repair.
func (w *writer) loadLink(ctx context.Context, id int64) (linkRow, int64, error) {
	var l linkRow
	err := w.get(ctx, &l, `SELECT id, a_id, b_id, order_key, forced, withdrawn, decision, reason FROM links WHERE id = ?`, id)
	if errors.Is(err, sql.ErrNoRows) {
		return l, 0, mapping.Errorf(mapping.CodeNotFound, "link %d does not exist (its profile may have been deleted)", id)
	}
	if err != nil {
		return l, 0, fmt.Errorf("read link %d: %w", id, err)
	}
	var cluster int64
	if err := w.get(ctx, &cluster, `SELECT cluster_id FROM identifiers WHERE id = ?`, l.AID); err != nil {
		return l, 0, fmt.Errorf("read link %d: %w", id, err)
	}
	// A link of an identifier a deletion holds back is not shown, and not
	// repaired: forcing it would bring the deleted person back.
	var held bool
	if err := w.get(ctx, &held, `SELECT EXISTS (SELECT 1 FROM identifiers WHERE id IN (?, ?) AND profile_id = 0)`, l.AID, l.BID); err != nil {
		return l, 0, fmt.Errorf("read link %d: %w", id, err)
	}
	if held {
		return l, 0, mapping.Errorf(mapping.CodeNotFound, "link %d does not exist (its profile may have been deleted)", id)
	}
	return l, cluster, nil
}

// ResolveConflict settles a refused link. "link" forces it: it is decided
// before every other link of its cluster, so it wins over the links it
// conflicted with (rule 3 still holds: those become the conflicts), and it
// skips the caps. "dismiss" withdraws it. The action is logged with the
// operator and reason, and the cluster is re-decided.
func (s *Store) ResolveConflict(ctx context.Context, linkID int64, action, operator, reason string) error {
	if action != ResolveLink && action != ResolveDismiss {
		return mapping.Errorf(mapping.CodeInvalid, "action %q: want %q or %q", action, ResolveLink, ResolveDismiss)
	}
	return s.inTx(ctx, func(ctx context.Context, w *writer) error {
		l, cluster, err := w.loadLink(ctx, linkID)
		if err != nil {
			return err
		}
		if l.Withdrawn || (l.Decision != mapping.DecisionConflict && l.Decision != mapping.DecisionOverCap) {
			return mapping.Errorf(mapping.CodeConflict, "link %d is not an open conflict (it is %s); reload the page", linkID, l.Decision)
		}
		actor := operatorActor(operator)
		if action == ResolveLink {
			if _, err := w.exec(ctx, `UPDATE links SET forced = 1 WHERE id = ?`, linkID); err != nil {
				return fmt.Errorf("force link %d: %w", linkID, err)
			}
			if err := w.logLink(ctx, linkID, mapping.DecisionForced, reason, actor); err != nil {
				return err
			}
		} else {
			if _, err := w.exec(ctx, `UPDATE links SET withdrawn = 1, decision = ? WHERE id = ?`, mapping.DecisionDismissed, linkID); err != nil {
				return fmt.Errorf("dismiss link %d: %w", linkID, err)
			}
			if err := w.logLink(ctx, linkID, mapping.DecisionDismissed, reason, actor); err != nil {
				return err
			}
		}
		return w.replay(ctx, cluster, actor, "an operator resolved link "+fmt.Sprint(linkID))
	})
}

// Unmerge retracts an applied link and re-decides its cluster, which splits
// the profile unless other links still join it. Logged with operator and reason.
func (s *Store) Unmerge(ctx context.Context, linkID int64, operator, reason string) error {
	return s.inTx(ctx, func(ctx context.Context, w *writer) error {
		l, cluster, err := w.loadLink(ctx, linkID)
		if err != nil {
			return err
		}
		if l.Withdrawn || l.Decision != mapping.DecisionApplied {
			return mapping.Errorf(mapping.CodeConflict, "link %d is not applied (it is %s), so there is nothing to unmerge", linkID, l.Decision)
		}
		if _, err := w.exec(ctx, `UPDATE links SET withdrawn = 1, decision = ? WHERE id = ?`, mapping.DecisionRetracted, linkID); err != nil {
			return fmt.Errorf("retract link %d: %w", linkID, err)
		}
		actor := operatorActor(operator)
		if err := w.logLink(ctx, linkID, mapping.DecisionRetracted, reason, actor); err != nil {
			return err
		}
		return w.replay(ctx, cluster, actor, "an operator unmerged link "+fmt.Sprint(linkID))
	})
}

// DeleteProfile deletes the profile holding id (a privacy request) as it
// stands now: its identifiers are held back at once and erased, with their
// links, traits and messages, once the deletion grace period is over
// (Options.DeletionGrace), leaving tombstones so they do not come back. The
// log keeps who deleted how many identifiers and why, never which.
func (s *Store) DeleteProfile(ctx context.Context, id mapping.Identifier, operator, reason string) ([]mapping.Identifier, error) {
	var deleted []mapping.Identifier
	err := s.inTx(ctx, func(ctx context.Context, w *writer) error {
		var profileID int64
		err := w.get(ctx, &profileID, `SELECT profile_id FROM identifiers WHERE kind = ? AND value = ?`, id.Kind, id.Value)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && profileID == 0) {
			return mapping.Errorf(mapping.CodeNotFound, "no profile has %s", id)
		}
		if err != nil {
			return fmt.Errorf("delete %s: %w", id, err)
		}
		m := mapping.Message{Source: mapping.SourceAdmin, ID: fmt.Sprintf("delete-%d", w.now), Timestamp: time.Unix(0, w.now)}
		if deleted, err = w.applyDelete(ctx, []candidate{{"identifier", id.Kind, id.Value}}, m); err != nil {
			return err
		}
		return w.logLink(ctx, 0, mapping.DecisionDeleted, fmt.Sprintf("profile with %d identifiers deleted: %s", len(deleted), reason), operatorActor(operator))
	})
	return deleted, err
}

package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/schollz/progressbar/v3"

	"github.com/pubq/pubq/pkg/edtech/jobs"
	"github.com/pubq/pubq/pkg/edtech/merge"
	"github.com/pubq/pubq/pkg/publish"
)

// Outcomes of one pair in pubqctl merge.
const (
	pairMerged        = "merged"
	pairPlanned       = "planned"        // a dry run
	pairAlreadyMerged = "already_merged" // nothing to do
	pairFailed        = "failed"
	pairNotRun        = "not_run" // interrupted before its turn
	pairEnqueued      = "enqueued"
	pairDuplicate     = "duplicate" // --enqueue: a job with the key existed
)

// pairResult is one pair's line of pubqctl merge's output.
type pairResult struct {
	SurvivorID  int64  `json:"survivor_id"`
	DuplicateID int64  `json:"duplicate_id"`
	Status      string `json:"status"`
	Error       string `json:"error,omitempty"`
	// MergedInto is the account actually merged into when the survivor had been merged away.
	MergedInto   int64         `json:"merged_into,omitempty"`
	Verified     bool          `json:"verified,omitempty"`
	MergeAuditID int64         `json:"merge_audit_id,omitempty"`
	Report       *merge.Report `json:"report,omitempty"`
	JobKey       string        `json:"job_key,omitempty"`
	JobState     string        `json:"job_state,omitempty"`
}

// mergeOutput is pubqctl merge --json.
type mergeOutput struct {
	DryRun      bool           `json:"dry_run"`
	Enqueue     bool           `json:"enqueue"`
	Interrupted bool           `json:"interrupted,omitempty"`
	Counts      map[string]int `json:"counts"`
	Pairs       []pairResult   `json:"pairs"`
}

func (c *cli) cmdMerge(args []string) error {
	fs := c.flags("merge")
	survivor := fs.Int64("survivor", 0, "the account to keep")
	duplicate := fs.Int64("duplicate", 0, "the account to fold into the survivor")
	file := fs.String("file", "", "a CSV file of pairs, one `survivor,duplicate` per line (# comments and a header line allowed)")
	dry := fs.Bool("dry-run", false, "plan each merge and audit the plan; change no data")
	enqueue := fs.Bool("enqueue", false, "enqueue account.merge jobs for the workers instead of merging here")
	verify := fs.String("verify", "pair", "after each merge: `pair` (merge.Verify, the pair's rows), full (merge.VerifyDatabase: also every row below students, ~0.7 s at 200k students) or off")
	noVerify := fs.Bool("no-verify", false, "the same as --verify=off")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("merge takes no arguments (got %q); give --survivor and --duplicate, or --file", pos[0])
	}
	switch *verify {
	case "pair", "full", "off":
	default:
		return usagef("merge: --verify %q: want pair, full or off", *verify)
	}
	if *noVerify {
		*verify = "off"
	}
	var reqs []merge.MergeRequest
	switch {
	case *file != "" && (*survivor != 0 || *duplicate != 0):
		return usagef("merge: give --survivor and --duplicate, or --file, not both")
	case *file != "":
		if reqs, err = readPairs(*file); err != nil {
			return err
		}
	case *survivor == 0 || *duplicate == 0:
		return usagef("merge needs --survivor and --duplicate, or --file")
	default:
		reqs = []merge.MergeRequest{{SurvivorID: *survivor, DuplicateID: *duplicate}}
		if err := reqs[0].Validate(); err != nil {
			return usageError{err}
		}
	}
	for i := range reqs {
		reqs[i].DryRun = *dry
	}
	actor, err := c.actor()
	if err != nil {
		return err
	}
	out := &mergeOutput{DryRun: *dry, Enqueue: *enqueue, Counts: map[string]int{}}
	if *enqueue {
		err = c.enqueueMerges(actor, reqs, out)
	} else {
		err = c.runMerges(actor, reqs, *verify, out)
	}
	if err != nil {
		return err
	}
	for _, p := range out.Pairs {
		out.Counts[p.Status]++
	}
	if c.json {
		if err := c.printJSON(out); err != nil {
			return err
		}
	} else if err := printMerges(c.stdout, out); err != nil {
		return err
	}
	switch {
	case out.Interrupted:
		return fmt.Errorf("interrupted: %d of %d pairs not run", out.Counts[pairNotRun], len(out.Pairs))
	case out.Counts[pairFailed] > 0:
		return fmt.Errorf("%d of %d pairs failed", out.Counts[pairFailed], len(out.Pairs))
	}
	return nil
}

// readPairs reads survivor,duplicate lines; every line is checked before anything runs.
func readPairs(path string) ([]merge.MergeRequest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, usagef("--file: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comment = '#'
	r.FieldsPerRecord = 2
	r.TrimLeadingSpace = true
	var out []merge.MergeRequest
	for first := true; ; first = false {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, usagef("--file %s: %w (want survivor,duplicate per line)", path, err)
		}
		line, _ := r.FieldPos(0)
		s, serr := strconv.ParseInt(strings.TrimSpace(rec[0]), 10, 64)
		d, derr := strconv.ParseInt(strings.TrimSpace(rec[1]), 10, 64)
		if serr != nil || derr != nil {
			if first && strings.HasPrefix(strings.ToLower(rec[0]), "survivor") {
				continue // a header
			}
			return nil, usagef("--file %s:%d: %q is not two student ids", path, line, strings.Join(rec, ","))
		}
		req := merge.MergeRequest{SurvivorID: s, DuplicateID: d}
		if err := req.Validate(); err != nil {
			return nil, usagef("--file %s:%d: %w", path, line, err)
		}
		out = append(out, req)
	}
	if len(out) == 0 {
		return nil, usagef("--file %s: no pairs", path)
	}
	return out, nil
}

// bar returns a progress bar on stderr for total steps when one is wanted (a terminal, human
// output, more than one step), else nil; a nil bar's methods are no-ops.
func (c *cli) bar(total int, desc string) *progressbar.ProgressBar {
	if !c.tty || c.json || total < 2 {
		return nil
	}
	// Drawn at once: the first step (a seed batch, a slow merge) can take seconds.
	return progressbar.NewOptions(total, progressbar.OptionSetWriter(c.stderr), progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(), progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionSetRenderBlankState(true))
}

// runMerges merges each pair in its own transaction, directly against the database, recording the
// actor in pubq.audit in the same transaction.
func (c *cli) runMerges(actor string, reqs []merge.MergeRequest, verify string, out *mergeOutput) error {
	st, err := c.open()
	if err != nil {
		return err
	}
	bar := c.bar(len(reqs), "merge")
	for i, req := range reqs {
		if c.ctx.Err() != nil {
			out.Interrupted = true
			for _, r := range reqs[i:] {
				out.Pairs = append(out.Pairs, pairResult{SurvivorID: r.SurvivorID, DuplicateID: r.DuplicateID, Status: pairNotRun})
			}
			break
		}
		pr := pairResult{SurvivorID: req.SurvivorID, DuplicateID: req.DuplicateID}
		err := pgx.BeginFunc(c.ctx, st.Pool(), func(tx pgx.Tx) error {
			return mergeOne(c.ctx, tx, actor, req, verify, &pr)
		})
		if err != nil {
			pr = pairResult{SurvivorID: req.SurvivorID, DuplicateID: req.DuplicateID, Status: pairFailed, Error: err.Error()}
		}
		out.Pairs = append(out.Pairs, pr)
		if bar != nil {
			_ = bar.Add(1)
		}
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return nil
}

// verify is pair, full or off (--verify).
func mergeOne(ctx context.Context, tx pgx.Tx, actor string, req merge.MergeRequest, verify string, pr *pairResult) error {
	// The same rule as the account.merge job: a survivor merged away is followed.
	res, err := jobs.MergePair(ctx, tx, req, jobs.MergeOptions{Verify: verify != "off", VerifyDatabase: verify == "full", FollowSurvivor: true})
	if err != nil {
		return err
	}
	rep := res.Report
	pr.Report, pr.Verified = rep, res.Verified
	if res.RequestedSurvivorID != 0 {
		pr.MergedInto = rep.SurvivorID
	}
	switch {
	case rep.AlreadyMergedInto != 0:
		pr.Status = pairAlreadyMerged
	case rep.DryRun:
		pr.Status = pairPlanned
	default:
		pr.Status = pairMerged
	}
	if rep.AlreadyMergedInto == 0 {
		// The merge wrote one merge_audit row in this session: link the operator's audit row to it.
		if err := tx.QueryRow(ctx, `SELECT currval(pg_get_serial_sequence($1, 'id'))`, merge.AuditTable).Scan(&pr.MergeAuditID); err != nil {
			return fmt.Errorf("reading the merge_audit id: %w", err)
		}
	}
	action := "merge"
	if req.DryRun {
		action = "merge.dry_run"
	}
	t := rep.Totals()
	detail, err := json.Marshal(map[string]any{"survivor_id": req.SurvivorID, "duplicate_id": req.DuplicateID,
		"merged_into": rep.SurvivorID, "result": pr.Status, "already_merged_into": rep.AlreadyMergedInto,
		"merge_audit_id": pr.MergeAuditID, "verified": pr.Verified,
		"moved": t.Moved, "folded": t.Folded, "deleted": t.Deleted, "filled": t.Filled})
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO pubq.audit (actor, action, detail) VALUES ($1, $2, $3)`, actor, action, detail); err != nil {
		return fmt.Errorf("writing pubq.audit: %w", err)
	}
	return nil
}

// enqueueMerges enqueues one account.merge job per pair, in batches the client accepts, each batch
// with its pubq.audit rows in one transaction.
func (c *cli) enqueueMerges(actor string, reqs []merge.MergeRequest, out *mergeOutput) error {
	qc, err := c.queues()
	if err != nil {
		return err
	}
	st, err := c.open()
	if err != nil {
		return err
	}
	pub, err := publish.New(st, &publish.Config{Queues: qc})
	if err != nil {
		return err
	}
	// Dry runs are planned once per invocation; real merges once per pair, whoever enqueues them.
	scope := "pubqctl:" + actor + ":" + time.Now().UTC().Format(time.RFC3339Nano)
	prs := make([]publish.Request, len(reqs))
	for i, r := range reqs {
		if prs[i], err = jobs.MergeJob(r, scope); err != nil {
			return usageError{err}
		}
	}
	action := "merge.enqueue"
	if len(reqs) > 0 && reqs[0].DryRun {
		action = "merge.enqueue.dry_run"
	}
	bar := c.bar(len(prs), "enqueue")
	for done := 0; done < len(prs); {
		n := min(len(prs)-done, publish.MaxBatch)
		var res []publish.Result
		err := pgx.BeginFunc(c.ctx, st.Pool(), func(tx pgx.Tx) error {
			var err error
			if res, err = pub.EnqueueTx(c.ctx, tx, prs[done:done+n]...); err != nil {
				return err
			}
			keys, details := make([]string, n), make([]string, n)
			for i, r := range res {
				req := reqs[done+i]
				d, _ := json.Marshal(map[string]any{"survivor_id": req.SurvivorID, "duplicate_id": req.DuplicateID,
					"dry_run": req.DryRun, "duplicate": r.Duplicate})
				keys[i], details[i] = r.Key, string(d)
			}
			_, err = tx.Exec(c.ctx, `INSERT INTO pubq.audit (actor, action, job_key, detail)
				SELECT $1, $2, r.k, r.d::jsonb FROM unnest($3::text[], $4::text[]) WITH ORDINALITY AS r(k, d, n) ORDER BY r.n`,
				actor, action, keys, details)
			return err
		})
		if err != nil {
			if bar != nil {
				_ = bar.Finish()
			}
			if errors.Is(err, publish.ErrUnknownKind) {
				return usageError{fmt.Errorf("the queue config routes no queue to %s: %w", jobs.KindMerge, err)}
			}
			return fmt.Errorf("enqueueing pairs %d..%d (earlier batches were enqueued): %w", done+1, done+n, err)
		}
		for i, r := range res {
			req := reqs[done+i]
			pr := pairResult{SurvivorID: req.SurvivorID, DuplicateID: req.DuplicateID, Status: pairEnqueued, JobKey: r.Key, JobState: r.State}
			if r.Duplicate {
				pr.Status = pairDuplicate
			}
			out.Pairs = append(out.Pairs, pr)
		}
		done += n
		if bar != nil {
			_ = bar.Set(done)
		}
	}
	if bar != nil {
		_ = bar.Finish()
	}
	return nil
}

// maxPairLines is how many pairs the human output lists one per line.
const maxPairLines = 200

func printMerges(w io.Writer, out *mergeOutput) error {
	if len(out.Pairs) == 1 && out.Pairs[0].Report != nil {
		p := out.Pairs[0]
		if p.MergedInto != 0 {
			fmt.Fprintf(w, "survivor %d had been merged into %d: merging into %d\n", p.SurvivorID, p.MergedInto, p.MergedInto)
		}
		if err := p.Report.Format(w); err != nil {
			return err
		}
		if p.Verified {
			fmt.Fprintln(w, "verified: nothing references the duplicate, no orphans, counts match")
		}
		if p.MergeAuditID != 0 {
			fmt.Fprintf(w, "merge_audit id %d\n", p.MergeAuditID)
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if out.Enqueue {
		fmt.Fprintln(tw, "SURVIVOR\tDUPLICATE\tRESULT\tJOB KEY\tJOB STATE")
	} else {
		fmt.Fprintln(tw, "SURVIVOR\tDUPLICATE\tRESULT\tMOVED\tFOLDED\tDELETED\tFILLED\tNOTE")
	}
	for i, p := range out.Pairs {
		if i == maxPairLines {
			fmt.Fprintf(tw, "… and %d more (use --json for all)\n", len(out.Pairs)-maxPairLines)
			break
		}
		if out.Enqueue {
			fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\n", p.SurvivorID, p.DuplicateID, p.Status, p.JobKey, p.JobState)
			continue
		}
		var t merge.TableReport
		note := oneLine(p.Error, 100)
		if p.Report != nil {
			t = p.Report.Totals()
			switch {
			case p.Report.AlreadyMergedInto != 0:
				note = fmt.Sprintf("already merged into %d", p.Report.AlreadyMergedInto)
			case p.MergedInto != 0:
				note = fmt.Sprintf("survivor merged away: into %d", p.MergedInto)
			}
		}
		fmt.Fprintf(tw, "%d\t%d\t%s\t%d\t%d\t%d\t%d\t%s\n", p.SurvivorID, p.DuplicateID, p.Status, t.Moved, t.Folded, t.Deleted, t.Filled, dash(note))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if !out.Enqueue {
		if err := printTableTotals(w, out.Pairs); err != nil {
			return err
		}
	}
	var parts []string
	for _, s := range []string{pairMerged, pairPlanned, pairAlreadyMerged, pairEnqueued, pairDuplicate, pairFailed, pairNotRun} {
		if n := out.Counts[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, strings.ReplaceAll(s, "_", " ")))
		}
	}
	_, err := fmt.Fprintf(w, "\n%d pairs: %s\n", len(out.Pairs), strings.Join(parts, ", "))
	return err
}

// printTableTotals sums the per-table reports of every merged or planned pair.
func printTableTotals(w io.Writer, pairs []pairResult) error {
	var order []string
	sum := map[string]*merge.TableReport{}
	for _, p := range pairs {
		if p.Report == nil {
			continue
		}
		for _, t := range p.Report.Tables {
			s := sum[t.Table]
			if s == nil {
				s = &merge.TableReport{Table: t.Table}
				sum[t.Table] = s
				order = append(order, t.Table)
			}
			s.Moved += t.Moved
			s.Folded += t.Folded
			s.Deleted += t.Deleted
			s.Filled += t.Filled
		}
	}
	if len(order) == 0 {
		return nil
	}
	fmt.Fprintln(w, "\nper table, all pairs:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "table\tmoved\tfolded\tdeleted\tfilled")
	for _, name := range order {
		s := sum[name]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", s.Table, s.Moved, s.Folded, s.Deleted, s.Filled)
	}
	return tw.Flush()
}

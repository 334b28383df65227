// Package check is the `zqimg check` command.
package check

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"github.com/zqimg/zqimg/internal/cmdutil"
	pcheck "github.com/zqimg/zqimg/pkg/check"
)

// Options are the parsed flags and arguments of `zqimg check`.
type Options struct {
	IO         *cmdutil.IOStreams
	Repair     string
	Output     string
	Quiet      bool
	ForceShare bool
	Format     string
	File       string
}

// NewCmdCheck returns the check command.
func NewCmdCheck(ios *cmdutil.IOStreams, runF func(*Options) error) *cobra.Command {
	o := &Options{IO: ios}
	cmd := &cobra.Command{
		Use:   "check [-r leaks|all] [--output human|json] [-q] [-U] FILE",
		Short: "Check an image for consistency (refcounts, L1/L2 tables, zoned metadata) and repair it",
		Long: `Check a qcow2 image the way qemu-img check does: rebuild the reference
count of every cluster from every structure and compare it with the stored
refcounts; check the L1 and L2 entries and the OFLAG_COPIED flags; for
zoned images check the zoned extension, the write-pointer table, and that
no allocated data lies beyond a write pointer.

Per-problem lines go to standard error, the summary to standard output.
Exit status: 0 consistent, 1 check not completed, 2 corrupted, 3 leaked
clusters only (after a repair: the state of the repaired image).

-r leaks frees leaked clusters; -r all also repairs corruptions, rebuilding
the refcount structure when needed, clamps impossible write pointers and
discards data beyond write pointers. Zero clusters a zone reset left
allocated beyond a write pointer (QEMU's reset does) are not damage; both
repairs give their space back. A problem -r all could not repair is listed
by the second check with "(could not be repaired)".`,
		Example: `  zqimg check disk.qcow2
  zqimg check -r all --output=json zbc.qcow2`,
		Args: cmdutil.ExactlyOneFile,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.File = args[0]
			if runF != nil {
				return runF(o)
			}
			return Run(o)
		},
	}
	cmd.Flags().StringVarP(&o.Repair, "repair", "r", "", "repair inconsistencies: leaks or all")
	cmd.Flags().StringVar(&o.Output, "output", "human", "output format: human or json")
	cmd.Flags().BoolVarP(&o.Quiet, "quiet", "q", false, "print nothing on standard output")
	cmd.Flags().BoolVarP(&o.ForceShare, "force-share", "U", false, "open the image without taking locks")
	cmd.Flags().StringVarP(&o.Format, "format", "f", "qcow2", "image format (only qcow2)")
	return cmd
}

// Run checks the image and prints the report.
func Run(o *Options) error {
	if o.Output != "human" && o.Output != "json" {
		o.IO.Errorf("--output must be used with human or json as argument.")
		return cmdutil.Exit(1)
	}
	if o.Format != "qcow2" {
		o.IO.Errorf("Unknown file format '%s' (zqimg checks qcow2 images only)", o.Format)
		return cmdutil.Exit(1)
	}
	opts := pcheck.Options{ForceShare: o.ForceShare}
	if o.Repair != "" {
		m, err := pcheck.ParseMode(o.Repair)
		if err != nil {
			o.IO.Errorf("%v", err)
			return cmdutil.Exit(1)
		}
		opts.Repair = m
	}
	res, err := pcheck.CheckPath(o.File, opts)
	if res == nil {
		var oe *pcheck.OpenError
		if errors.As(err, &oe) {
			o.IO.Errorf("%s", o.IO.CouldNotOpen(oe.Path, oe.Err))
		} else {
			o.IO.Errorf("%v", err)
		}
		return cmdutil.Exit(1)
	}
	out := o.IO.Out
	if o.Quiet {
		out = io.Discard
	}
	if r := res.Repair; r != nil {
		printFindings(o.IO, r.Findings)
		if o.Output == "human" {
			fmt.Fprintf(out, "The following inconsistencies were found and repaired:\n\n"+
				"    %d leaked clusters\n"+
				"    %d corruptions\n\n"+
				"%s"+
				"Double checking the fixed image now...\n", r.LeaksFixed, r.CorruptionsFixed, reclaimed(r))
		}
	}
	printFindings(o.IO, res.Findings)
	if err != nil {
		o.IO.Errorf("Check failed: %s", o.IO.Reason(err))
		return cmdutil.Exit(1)
	}
	if o.Output == "json" {
		b, err := JSON(res)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s\n", b)
	} else {
		fmt.Fprint(out, Human(res))
	}
	if res.CheckErrors > 0 {
		o.IO.Errorf("Check failed")
	}
	return cmdutil.Exit(res.ExitCode())
}

// reclaimed says how many zero clusters beyond write pointers a repair
// gave back ("" when none).
func reclaimed(r *pcheck.Result) string {
	if z := r.Zoned; z != nil && z.ZeroBeyondWPReclaimed > 0 {
		return fmt.Sprintf("%d zero clusters beyond write pointers were reclaimed.\n\n", z.ZeroBeyondWPReclaimed)
	}
	return ""
}

// printFindings prints the lines of findings on the error stream, those
// qemu-img reports as error messages after the program's name, in
// qemu-img's wording when zqimg runs as qemu-img.
func printFindings(ios *cmdutil.IOStreams, fs []pcheck.Finding) {
	var b bytes.Buffer
	for _, f := range fs {
		if f.Report {
			b.WriteString(ios.ProgName() + ": ")
		}
		if ios.QEMU() && f.QEMUMsg != "" {
			b.WriteString(f.QEMUMsg)
		} else {
			b.WriteString(f.Msg)
		}
		b.WriteByte('\n')
	}
	ios.ErrOut.Write(b.Bytes())
}

// Human returns qemu-img check's summary of a result.
func Human(r *pcheck.Result) string {
	var b bytes.Buffer
	if r.Corruptions == 0 && r.Leaks == 0 && r.CheckErrors == 0 {
		b.WriteString("No errors were found on the image.\n")
	} else {
		if r.Corruptions > 0 {
			fmt.Fprintf(&b, "\n%d errors were found on the image.\n"+
				"Data may be corrupted, or further writes to the image may corrupt it.\n", r.Corruptions)
		}
		if r.Leaks > 0 {
			fmt.Fprintf(&b, "\n%d leaked clusters were found on the image.\n"+
				"This means waste of disk space, but no harm to data.\n", r.Leaks)
		}
		if r.CheckErrors > 0 {
			fmt.Fprintf(&b, "\n%d internal errors have occurred during the check.\n", r.CheckErrors)
		}
	}
	if z := r.Zoned; z != nil && z.DataBeyondWP > 0 {
		fmt.Fprintf(&b, "%d of the leaked clusters are data beyond write pointers (use -r all to discard them).\n", z.DataBeyondWP)
	}
	if z := r.Zoned; z != nil && z.ZeroBeyondWP > 0 {
		fmt.Fprintf(&b, "%d zero clusters beyond write pointers are still allocated (a zone reset left them; no harm to data, -r leaks reclaims the space).\n", z.ZeroBeyondWP)
	}
	if r.TotalClusters != 0 && r.AllocatedClusters != 0 {
		fmt.Fprintf(&b, "%d/%d = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
			r.AllocatedClusters, r.TotalClusters,
			float64(r.AllocatedClusters)*100.0/float64(r.TotalClusters),
			float64(r.FragmentedClusters)*100.0/float64(r.AllocatedClusters),
			float64(r.CompressedClusters)*100.0/float64(r.AllocatedClusters))
	}
	if r.ImageEndOffset != 0 {
		fmt.Fprintf(&b, "Image end offset: %d\n", r.ImageEndOffset)
	}
	return b.String()
}

// jsonCheck is qemu-img's ImageCheck with its keys in the order qemu-img
// 7.2 prints them (the iteration order of QEMU's QDict) and its omission
// rules, plus the zoned counts.
type jsonCheck struct {
	ImageEndOffset     int64      `json:"image-end-offset,omitempty"`
	CompressedClusters int64      `json:"compressed-clusters,omitempty"`
	TotalClusters      int64      `json:"total-clusters,omitempty"`
	Corruptions        int64      `json:"corruptions,omitempty"`
	CorruptionsFixed   int64      `json:"corruptions-fixed,omitempty"`
	CheckErrors        int64      `json:"check-errors"`
	Leaks              int64      `json:"leaks,omitempty"`
	LeaksFixed         int64      `json:"leaks-fixed,omitempty"`
	AllocatedClusters  int64      `json:"allocated-clusters,omitempty"`
	Filename           string     `json:"filename"`
	Format             string     `json:"format"`
	FragmentedClusters int64      `json:"fragmented-clusters,omitempty"`
	Zoned              *jsonZoned `json:"zoned,omitempty"`
}

type jsonZoned struct {
	Zones                   uint32 `json:"zones"`
	ConventionalZones       uint32 `json:"conventional-zones"`
	ExtensionErrors         int64  `json:"extension-errors"`
	WritePointerErrors      int64  `json:"write-pointer-errors"`
	DataBeyondWP            int64  `json:"data-beyond-write-pointer"`
	ExtensionErrorsFixed    int64  `json:"extension-errors-fixed"`
	WritePointerErrorsFixed int64  `json:"write-pointer-errors-fixed"`
	DataBeyondWPFixed       int64  `json:"data-beyond-write-pointer-fixed"`
	ZeroBeyondWP            int64  `json:"zero-clusters-beyond-write-pointer"`
	ZeroBeyondWPReclaimed   int64  `json:"zero-clusters-reclaimed"`
}

// JSON returns the result as qemu-img check --output=json prints it
// (without the final newline).
func JSON(r *pcheck.Result) ([]byte, error) {
	if r == nil {
		return nil, errors.New("no result")
	}
	j := jsonCheck{
		ImageEndOffset:     r.ImageEndOffset,
		CompressedClusters: r.CompressedClusters,
		TotalClusters:      r.TotalClusters,
		Corruptions:        r.Corruptions,
		CorruptionsFixed:   r.CorruptionsFixed,
		CheckErrors:        r.CheckErrors,
		Leaks:              r.Leaks,
		LeaksFixed:         r.LeaksFixed,
		AllocatedClusters:  r.AllocatedClusters,
		Filename:           r.Filename,
		Format:             r.Format,
		FragmentedClusters: r.FragmentedClusters,
	}
	if z := r.Zoned; z != nil {
		j.Zoned = &jsonZoned{
			Zones:                   z.Zones,
			ConventionalZones:       z.ConventionalZones,
			ExtensionErrors:         z.ExtensionErrors,
			WritePointerErrors:      z.WritePointerErrors,
			DataBeyondWP:            z.DataBeyondWP,
			ExtensionErrorsFixed:    z.ExtensionErrorsFixed,
			WritePointerErrorsFixed: z.WritePointerErrorsFixed,
			DataBeyondWPFixed:       z.DataBeyondWPFixed,
			ZeroBeyondWP:            z.ZeroBeyondWP,
			ZeroBeyondWPReclaimed:   z.ZeroBeyondWPReclaimed,
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "    ")
	if err := enc.Encode(j); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// Command go-spiffe-client is Warden's test client for go-spiffe, the SPIFFE project's Go
// library: it runs every Workload API call a Go workload makes against one socket and prints
// what it saw as one JSON object, which crates/cli/tests/spiffe_sdks.rs checks. It is our own
// test program, built by scripts/install-sdk-deps.sh (and by the test) outside the clone.
//
// Usage: go-spiffe-client SOCKET AUDIENCE ROTATIONS
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// report is what the Rust test reads.
type report struct {
	X509ID         string   `json:"x509_id"`
	X509Chain      int      `json:"x509_chain"`
	BundleTDs      []string `json:"bundle_trust_domains"`
	JWTSubject     string   `json:"jwt_subject"`
	JWTAudience    []string `json:"jwt_audience"`
	JWTValidatedBy string   `json:"jwt_validated_by_server"`
	JWTLocalOK     bool     `json:"jwt_validated_locally"`
	JWTWrongAud    string   `json:"jwt_wrong_audience_error"`
	Serials        []string `json:"watched_serials"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "go-spiffe-client:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 4 {
		return fmt.Errorf("usage: go-spiffe-client SOCKET AUDIENCE ROTATIONS")
	}
	socket, audience := os.Args[1], os.Args[2]
	rotations, err := strconv.Atoi(os.Args[3])
	if err != nil {
		return fmt.Errorf("ROTATIONS: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, workloadapi.WithAddr("unix://"+socket))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer client.Close()

	var r report
	svid, err := client.FetchX509SVID(ctx)
	if err != nil {
		return fmt.Errorf("FetchX509SVID: %w", err)
	}
	r.X509ID, r.X509Chain = svid.ID.String(), len(svid.Certificates)

	bundles, err := client.FetchX509Bundles(ctx)
	if err != nil {
		return fmt.Errorf("FetchX509Bundles: %w", err)
	}
	for _, b := range bundles.Bundles() {
		r.BundleTDs = append(r.BundleTDs, b.TrustDomain().String())
	}

	jwt, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience})
	if err != nil {
		return fmt.Errorf("FetchJWTSVID: %w", err)
	}
	r.JWTSubject, r.JWTAudience = jwt.ID.String(), jwt.Audience
	validated, err := client.ValidateJWTSVID(ctx, jwt.Marshal(), audience)
	if err != nil {
		return fmt.Errorf("ValidateJWTSVID: %w", err)
	}
	r.JWTValidatedBy = validated.ID.String()
	jwtBundles, err := client.FetchJWTBundles(ctx)
	if err != nil {
		return fmt.Errorf("FetchJWTBundles: %w", err)
	}
	_, err = jwtsvid.ParseAndValidate(jwt.Marshal(), jwtBundles, []string{audience})
	r.JWTLocalOK = err == nil
	if _, err := client.ValidateJWTSVID(ctx, jwt.Marshal(), "someone-else"); err != nil {
		r.JWTWrongAud = err.Error()
	}

	serials, err := watch(ctx, client, rotations+1)
	if err != nil {
		return err
	}
	r.Serials = serials
	return json.NewEncoder(os.Stdout).Encode(r)
}

// watch follows the X.509 context until it has seen `count` distinct SVIDs.
func watch(ctx context.Context, client *workloadapi.Client, count int) ([]string, error) {
	w := &watcher{updates: make(chan string, 16), errs: make(chan error, 1)}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = client.WatchX509Context(ctx, w) }()
	var serials []string
	for len(serials) < count {
		select {
		case s := <-w.updates:
			if len(serials) == 0 || serials[len(serials)-1] != s {
				serials = append(serials, s)
			}
		case err := <-w.errs:
			return serials, fmt.Errorf("WatchX509Context: %w", err)
		case <-ctx.Done():
			return serials, fmt.Errorf("WatchX509Context: saw %d of %d SVIDs: %w", len(serials), count, ctx.Err())
		}
	}
	return serials, nil
}

type watcher struct {
	updates chan string
	errs    chan error
}

func (w *watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	if svid := c.DefaultSVID(); svid != nil {
		w.updates <- svid.Certificates[0].SerialNumber.String()
	}
}

func (w *watcher) OnX509ContextWatchError(err error) {
	select {
	case w.errs <- err:
	default:
	}
}

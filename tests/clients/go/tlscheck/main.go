// Command tlscheck makes one TLS connection with amqp091-go (DialConfig with
// a tls.Config, i.e. what DialTLS and DialTLS_ExternalAuth do): connect,
// publish one message, consume it. Used by tests/clients/run_tls.sh; the
// settings (TLS_* variables) and exit codes are those of
// tests/clients/python/tls_check.py: 0 ok, 2 refused-tls, 3 refused-auth,
// 1 error.
package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

func env(name, dflt string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return dflt
}

func timeout() time.Duration {
	s, err := strconv.ParseFloat(env("AMQP_TEST_TIMEOUT", "10"), 64)
	if err != nil || s <= 0 {
		s = 10
	}
	return time.Duration(s * float64(time.Second))
}

func bodyBytes() int {
	n, err := strconv.Atoi(env("TLS_BODY_BYTES", "36"))
	if err != nil || n < 0 {
		return 36
	}
	return n
}

func tlsConfig() (*tls.Config, error) {
	pem, err := os.ReadFile(env("TLS_CA", ""))
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, errors.New("no certificate in TLS_CA")
	}
	cfg := &tls.Config{RootCAs: roots, ServerName: env("TLS_SERVER_NAME", "localhost")}
	if env("TLS_MAX_VERSION", "") == "1.2" {
		cfg.MaxVersion = tls.VersionTLS12
	}
	if c := env("TLS_CERT", ""); c != "" {
		pair, err := tls.LoadX509KeyPair(c, env("TLS_KEY", ""))
		if err != nil {
			return nil, err
		}
		// Always present it: by default crypto/tls sends no certificate when
		// the server's CertificateRequest names other CAs, which would turn
		// the wrong-CA case into the no-certificate one.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &pair, nil
		}
	}
	return cfg, nil
}

func amqpsURL(external bool) string {
	auth := ""
	if !external {
		auth = url.UserPassword(env("TLS_USER", "guest"), env("TLS_PASS", "guest")).String() + "@"
	}
	return fmt.Sprintf("amqps://%s%s:%s/%s", auth, env("TLS_HOST", "127.0.0.1"), env("TLS_PORT", "5671"),
		url.PathEscape(env("TLS_VHOST", "/")))
}

// refusedKind: refused-auth for a 403 at login (amqp091-go reports a socket
// closed during the login as ErrCredentials too, so it cannot tell them
// apart), error when the server offers no mechanism the client wants,
// refused-tls for any other failure to connect.
func refusedKind(err error) (string, int) {
	if errors.Is(err, amqp.ErrSASL) { // the client's own verdict: no shared mechanism
		return "error", 1
	}
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) && amqpErr.Code == amqp.AccessRefused {
		return "refused-auth", 3
	}
	if errors.Is(err, amqp.ErrCredentials) || strings.Contains(err.Error(), "ACCESS_REFUSED") {
		return "refused-auth", 3
	}
	return "refused-tls", 2
}

func roundtrip(conn *amqp.Connection) (int, error) {
	ch, err := conn.Channel()
	if err != nil {
		return 0, fmt.Errorf("channel: %w", err)
	}
	body := make([]byte, bodyBytes())
	if _, err := rand.Read(body); err != nil {
		return 0, err
	}
	name := make([]byte, 5)
	if _, err := rand.Read(name); err != nil {
		return 0, err
	}
	queue := "lepus-go-tls-" + hex.EncodeToString(name)
	if _, err := ch.QueueDeclare(queue, false, true, true, false, nil); err != nil {
		return 0, fmt.Errorf("queue.declare: %w", err)
	}
	deliveries, err := ch.Consume(queue, "", true, false, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("basic.consume: %w", err)
	}
	msg := amqp.Publishing{ContentType: "application/octet-stream", Body: body}
	if err := ch.Publish("", queue, false, false, msg); err != nil {
		return 0, fmt.Errorf("basic.publish: %w", err)
	}
	select {
	case d, ok := <-deliveries:
		if !ok {
			return 0, errors.New("the consumer was closed before the delivery")
		}
		if !bytes.Equal(d.Body, body) {
			return 0, fmt.Errorf("body of %d bytes (starts %x), want %d bytes (starts %x)",
				len(d.Body), prefix(d.Body), len(body), prefix(body))
		}
	case <-time.After(timeout()):
		return 0, fmt.Errorf("no delivery within %v", timeout())
	}
	return len(body), nil
}

func prefix(b []byte) []byte {
	if len(b) > 16 {
		return b[:16]
	}
	return b
}

func oneLine(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	if len(s) > 300 {
		s = s[:300]
	}
	return s
}

func run() int {
	cfg, err := tlsConfig()
	if err != nil {
		fmt.Printf("error: client setup: %s\n", oneLine(err))
		return 1
	}
	external := env("TLS_LOGIN", "plain") == "external"
	config := amqp.Config{
		TLSClientConfig: cfg,
		Heartbeat:       10 * time.Second,
		Locale:          "en_US",
		Dial:            amqp.DefaultDial(timeout()),
	}
	if external {
		config.SASL = []amqp.Authentication{&amqp.ExternalAuth{}}
	}
	conn, err := amqp.DialConfig(amqpsURL(external), config)
	if err != nil {
		kind, code := refusedKind(err)
		fmt.Printf("%s: %s\n", kind, oneLine(err))
		return code
	}
	defer conn.Close()
	n, err := roundtrip(conn)
	if err != nil {
		fmt.Printf("error: %s\n", oneLine(err))
		return 1
	}
	state := conn.ConnectionState()
	fmt.Printf("ok: amqp091-go, TLS %s, %d-byte message published and consumed\n", tlsVersion(state.Version), n)
	return 0
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS13:
		return "1.3"
	}
	return fmt.Sprintf("0x%04x", v)
}

func main() {
	os.Exit(run())
}

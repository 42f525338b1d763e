// One TLS connection with the RabbitMQ Java client (useSslProtocol with an
// SSLContext trusting the test CA, a client certificate from a PKCS#12 file):
// connect, publish one message, consume it. Used by tests/clients/run_tls.sh;
// the settings (TLS_* variables; the client certificate as TLS_P12 with
// password TLS_P12_PASS) and exit codes are those of
// tests/clients/python/tls_check.py: 0 ok, 2 refused-tls, 3 refused-auth,
// 1 error.

import com.rabbitmq.client.*;

import java.io.FileInputStream;
import java.io.InputStream;
import java.net.Socket;
import java.security.KeyStore;
import java.security.Principal;
import java.security.PrivateKey;
import java.security.SecureRandom;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.cert.X509Certificate;
import java.util.Arrays;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import javax.net.ssl.*;

public class TlsCheck {
    static String env(String name, String dflt) {
        return Optional.ofNullable(System.getenv(name)).filter(s -> !s.isEmpty()).orElse(dflt);
    }

    static final long TIMEOUT_MS = (long) (Double.parseDouble(env("AMQP_TEST_TIMEOUT", "10")) * 1000);
    static final int BODY_BYTES = Integer.parseInt(env("TLS_BODY_BYTES", "36"));

    /** Presents the one configured certificate whatever CAs the server names:
     *  the JDK's key manager would otherwise send none for the wrong-CA case. */
    static final class OneCertificate extends X509ExtendedKeyManager {
        final String alias;
        final X509Certificate[] chain;
        final PrivateKey key;

        OneCertificate(KeyStore ks, char[] pass) throws Exception {
            alias = ks.aliases().nextElement();
            Certificate[] c = ks.getCertificateChain(alias);
            chain = new X509Certificate[c.length];
            for (int i = 0; i < c.length; i++) chain[i] = (X509Certificate) c[i];
            key = (PrivateKey) ks.getKey(alias, pass);
        }

        public String[] getClientAliases(String type, Principal[] issuers) { return new String[]{alias}; }
        public String chooseClientAlias(String[] types, Principal[] issuers, Socket s) { return alias; }
        public String chooseEngineClientAlias(String[] types, Principal[] issuers, SSLEngine e) { return alias; }
        public String[] getServerAliases(String type, Principal[] issuers) { return null; }
        public String chooseServerAlias(String type, Principal[] issuers, Socket s) { return null; }
        public X509Certificate[] getCertificateChain(String a) { return chain; }
        public PrivateKey getPrivateKey(String a) { return key; }
    }

    static SSLContext sslContext() throws Exception {
        KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
        trust.load(null, null);
        CertificateFactory cf = CertificateFactory.getInstance("X.509");
        try (InputStream in = new FileInputStream(env("TLS_CA", ""))) {
            int i = 0;
            for (Certificate c : cf.generateCertificates(in)) trust.setCertificateEntry("ca" + i++, c);
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        KeyManager[] kms = null;
        String p12 = env("TLS_P12", "");
        if (!p12.isEmpty()) {
            char[] pass = env("TLS_P12_PASS", "").toCharArray();
            KeyStore ks = KeyStore.getInstance("PKCS12");
            try (InputStream in = new FileInputStream(p12)) {
                ks.load(in, pass);
            }
            kms = new KeyManager[]{new OneCertificate(ks, pass)};
        }
        SSLContext ctx = SSLContext.getInstance("1.2".equals(env("TLS_MAX_VERSION", "")) ? "TLSv1.2" : "TLS");
        ctx.init(kms, tmf.getTrustManagers(), null);
        return ctx;
    }

    static String oneLine(Throwable t) {
        StringBuilder sb = new StringBuilder();
        for (Throwable c = t; c != null && sb.length() < 300; c = c.getCause()) {
            if (sb.length() > 0) sb.append(" <- ");
            sb.append(c.getClass().getSimpleName()).append(": ").append(c.getMessage());
        }
        String s = sb.toString().replaceAll("\\s+", " ");
        return s.length() > 300 ? s.substring(0, 300) : s;
    }

    /** The broker's 403 at login (not merely a socket closed during it). */
    static boolean isAuthRefusal(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            String m = String.valueOf(c.getMessage());
            if (m.contains("ACCESS_REFUSED") || m.contains("reply-code=403")) return true;
        }
        return false;
    }

    static int roundtrip(Connection conn) throws Exception {
        Channel ch = conn.createChannel();
        String queue = "lepus-java-tls-" + UUID.randomUUID().toString().substring(0, 10);
        ch.queueDeclare(queue, false, true, true, null);
        BlockingQueue<byte[]> got = new LinkedBlockingQueue<>();
        ch.basicConsume(queue, true, (tag, d) -> got.add(d.getBody()), tag -> { });
        byte[] body = new byte[BODY_BYTES];
        new SecureRandom().nextBytes(body);
        ch.basicPublish("", queue,
                new AMQP.BasicProperties.Builder().contentType("application/octet-stream").build(), body);
        byte[] b = got.poll(TIMEOUT_MS, TimeUnit.MILLISECONDS);
        if (b == null) throw new AssertionError("no delivery within " + TIMEOUT_MS + " ms");
        if (!Arrays.equals(b, body)) {
            throw new AssertionError("body of " + b.length + " bytes, want " + body.length + " bytes (differs)");
        }
        return b.length;
    }

    static int run() {
        ConnectionFactory f = new ConnectionFactory();
        Connection conn;
        try {
            f.setHost(env("TLS_HOST", "127.0.0.1"));
            f.setPort(Integer.parseInt(env("TLS_PORT", "5671")));
            f.setVirtualHost(env("TLS_VHOST", "/"));
            f.setConnectionTimeout((int) TIMEOUT_MS);
            f.setHandshakeTimeout((int) TIMEOUT_MS);
            f.setAutomaticRecoveryEnabled(false);
            f.useSslProtocol(sslContext());
            // Verify the server's name (the connect address, 127.0.0.1, is in
            // the test certificate's subjectAltName).
            f.setSocketConfigurator(socket -> {
                SSLSocket ssl = (SSLSocket) socket;
                SSLParameters p = ssl.getSSLParameters();
                p.setEndpointIdentificationAlgorithm("HTTPS");
                ssl.setSSLParameters(p);
            });
            if ("external".equals(env("TLS_LOGIN", "plain"))) {
                f.setSaslConfig(DefaultSaslConfig.EXTERNAL);
            } else {
                f.setUsername(env("TLS_USER", "guest"));
                f.setPassword(env("TLS_PASS", "guest"));
            }
        } catch (Exception e) {
            System.out.println("error: client setup: " + oneLine(e));
            return 1;
        }
        try {
            conn = f.newConnection();
        } catch (Exception e) {
            if (String.valueOf(e.getMessage()).contains("No compatible authentication mechanism")) {
                System.out.println("error: " + oneLine(e));  // the server offers no mechanism we want
                return 1;
            }
            boolean auth = isAuthRefusal(e);
            System.out.println((auth ? "refused-auth: " : "refused-tls: ") + oneLine(e));
            return auth ? 3 : 2;
        }
        try {
            int n = roundtrip(conn);
            conn.close();
            String proto = conn.getClientProperties().get("version") + "";
            System.out.println("ok: amqp-client " + proto + ", " + n + "-byte message published and consumed");
            return 0;
        } catch (Throwable e) {
            System.out.println("error: " + oneLine(e));
            return 1;
        }
    }

    public static void main(String[] args) {
        System.exit(run());
    }
}

// PgJDBC through pgcloak over TLS (ssl=true: verify-full against CA_FILE), with a PII
// column written and searched through a PreparedStatement.
//
// Usage: java -cp postgresql.jar JdbcTls.java URL CA_FILE
// URL is postgresql://USER:PASSWORD@HOST:PORT/DB. Prints "jdbc TLS OK" and exits 0 when
// the connection is TLS and works.

import java.net.URI;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.Properties;

public class JdbcTls {
    public static void main(String[] args) throws Exception {
        URI uri = new URI(args[0]);
        String[] userInfo = uri.getUserInfo().split(":", 2);
        Properties props = new Properties();
        props.setProperty("user", userInfo[0]);
        props.setProperty("password", userInfo[1]);
        props.setProperty("ssl", "true");
        props.setProperty("sslmode", "verify-full");
        props.setProperty("sslrootcert", args[1]);
        String url = "jdbc:postgresql://" + uri.getHost() + ":" + uri.getPort() + uri.getPath();
        try (Connection conn = DriverManager.getConnection(url, props)) {
            conn.createStatement().execute("CREATE TABLE IF NOT EXISTS tls_people (id int, email text)");
            try (PreparedStatement insert = conn.prepareStatement("INSERT INTO tls_people (id, email) VALUES (?, ?)")) {
                insert.setInt(1, 3);
                insert.setString(2, "jdbc@example.com");
                insert.executeUpdate();
            }
            try (PreparedStatement select = conn.prepareStatement("SELECT email FROM tls_people WHERE email = ?")) {
                select.setString(1, "jdbc@example.com");
                try (ResultSet rows = select.executeQuery()) {
                    if (!rows.next() || !rows.getString(1).equals("jdbc@example.com") || rows.next()) {
                        throw new AssertionError("the PII row did not come back once in clear");
                    }
                }
            }
        }
        System.out.println("jdbc TLS OK");
    }
}

use super::host::passwd_entry;
use super::*;
use tokio_postgres::NoTls;

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn select_one(url: &str) -> Result<i32, tokio_postgres::Error> {
    let client = connect(url).await?;
    Ok(client.query_one("SELECT 1", &[]).await?.get(0))
}

#[tokio::test]
async fn starts_and_accepts_the_superuser_password() {
    let pg = PgTemp::start().unwrap();
    assert!(pg.is_running());
    assert_eq!(pg.host(), "127.0.0.1");
    assert_eq!(pg.superuser(), "postgres");
    assert_eq!(pg.password(), "postgres");
    assert_eq!(
        pg.url("postgres"),
        format!(
            "postgresql://postgres:postgres@127.0.0.1:{}/postgres",
            pg.port()
        )
    );
    assert_eq!(select_one(&pg.url("postgres")).await.unwrap(), 1);

    // TCP really uses scram-sha-256: a wrong password is refused.
    let wrong = format!(
        "postgresql://postgres:nope@127.0.0.1:{}/postgres",
        pg.port()
    );
    assert!(select_one(&wrong).await.is_err());
}

#[tokio::test]
async fn builder_options_apply() {
    let pg = PgTemp::builder()
        .superuser_password("p@ss/w:rd %x")
        .hba_line("host all trustme 127.0.0.1/32 trust")
        .setting("max_connections", "7")
        .start()
        .unwrap();
    let admin = connect(&pg.url("postgres")).await.unwrap();
    let max: String = admin
        .query_one("SHOW max_connections", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(max, "7");
    admin
        .batch_execute("CREATE ROLE trustme LOGIN")
        .await
        .unwrap();
    let trusted = format!("postgresql://trustme@127.0.0.1:{}/postgres", pg.port());
    assert_eq!(select_one(&trusted).await.unwrap(), 1);
}

#[tokio::test]
async fn stop_and_restart_on_the_same_port() {
    let mut pg = PgTemp::start().unwrap();
    let port = pg.port();
    let client = connect(&pg.url("postgres")).await.unwrap();
    client
        .batch_execute("CREATE TABLE kept (x int)")
        .await
        .unwrap();

    pg.stop().unwrap();
    assert!(!pg.is_running());
    pg.stop().unwrap(); // idempotent
    assert!(select_one(&pg.url("postgres")).await.is_err());

    pg.restart().unwrap();
    assert!(pg.is_running());
    assert_eq!(pg.port(), port);
    let client = connect(&pg.url("postgres")).await.unwrap();
    client.batch_execute("SELECT * FROM kept").await.unwrap();

    pg.restart().unwrap(); // restarting a running server works too
    assert_eq!(select_one(&pg.url("postgres")).await.unwrap(), 1);
    let log = fs::read_to_string(pg.log_path()).unwrap();
    assert!(log.contains("database system is ready"), "{log}");
}

#[test]
fn restart_reports_a_taken_port() {
    let mut pg = PgTemp::start().unwrap();
    pg.stop().unwrap();
    let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, pg.port())).unwrap();
    let err = pg.restart().unwrap_err();
    assert!(
        matches!(err, PgTempError::PortInUse { port } if port == pg.port()),
        "{err}"
    );
    assert!(!pg.is_running());
    drop(squatter);
    pg.restart().unwrap();
    assert!(pg.is_running());
}

#[test]
fn drop_stops_the_server_and_removes_the_directory() {
    let pg = PgTemp::start().unwrap();
    let base = pg.base.clone();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, pg.port()));
    assert!(base.join("data/PG_VERSION").exists());
    drop(pg);
    assert!(!base.exists());
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn server_dies_with_the_thread_that_started_it() {
    let (pid, port, base) = std::thread::spawn(|| {
        let pg = PgTemp::start().unwrap();
        let pid = pg.child.lock().unwrap().as_ref().unwrap().id();
        let found = (pid, pg.port(), pg.base.clone());
        std::mem::forget(pg); // no Drop: only PDEATHSIG can stop it
        found
    })
    .join()
    .unwrap();
    // Reap it ourselves (its Child was forgotten), polling so a failure cannot hang.
    let mut status = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // SAFETY: waiting for our own child; status is a valid out-pointer.
        let reaped = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::WNOHANG) };
        if reaped == pid as libc::pid_t {
            break;
        }
        assert!(Instant::now() < deadline, "postgres outlived its thread");
        std::thread::sleep(POLL_INTERVAL);
    }
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    // Orphaned backends exit on their own once they notice the postmaster is gone.
    std::thread::sleep(Duration::from_millis(300));
    let _ = fs::remove_dir_all(base);
}

#[test]
fn parses_passwd() {
    let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                  postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
    assert_eq!(
        passwd_entry(passwd, "postgres"),
        Some(Owner { uid: 101, gid: 104 })
    );
    assert_eq!(passwd_entry(passwd, "post"), None);
}

#[test]
fn percent_encodes_userinfo() {
    assert_eq!(percent_encode("a-Z_0.~"), "a-Z_0.~");
    assert_eq!(percent_encode("p@ss/w:rd %"), "p%40ss%2Fw%3Ard%20%25");
}

#[test]
fn stale_directories_are_removed_and_live_ones_kept() {
    use super::host::{creator_pid, remove_stale_dirs};
    assert_eq!(creator_pid("pgtemp-4242-0-733958591"), Some(4242));
    for name in [
        "pgtemp-4242",
        "pgtemp-x-0-1",
        "pgtemp-4242-0-1-2",
        "pgcloak-4242-0-1",
    ] {
        assert_eq!(creator_pid(name), None, "{name}");
    }
    // A pid that is gone: a child that has exited and been reaped.
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead = gone.id();
    let owner = server_owner().unwrap();
    let make = |name: String, server_pid: Option<u32>| {
        let dir = std::env::temp_dir().join(name);
        create_owned_dir(&dir, owner).unwrap();
        create_owned_dir(&dir.join("data"), owner).unwrap();
        if let Some(pid) = server_pid {
            fs::write(dir.join("data/postmaster.pid"), format!("{pid}\n/x\n")).unwrap();
        }
        dir
    };
    let stale = make(format!("pgtemp-{dead}-900001-1"), Some(dead));
    let ours = make(format!("pgtemp-{}-900002-1", std::process::id()), None);
    // Its maker is gone but its server (here: this process) still runs.
    let serving = make(format!("pgtemp-{dead}-900003-1"), Some(std::process::id()));
    let removed = remove_stale_dirs(owner);
    // Another test's start may have removed it first.
    assert!(!stale.exists(), "{removed:?}");
    assert!(ours.exists() && serving.exists(), "{removed:?}");
    for dir in [ours, serving] {
        fs::remove_dir_all(dir).unwrap();
    }
}

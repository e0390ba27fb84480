"""SQLAlchemy 2 ORM on psycopg 3 through pgcloak.

Usage: sqlalchemy_smoke.py postgresql://user:pw@host:port/db
Prints "sqlalchemy OK" on stdout and exits 0 only if everything worked.
"""

import sys

import sqlalchemy
from sqlalchemy import String, create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "sa_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200), unique=True)


def main():
    url = make_url(sys.argv[1]).set(drivername="postgresql+psycopg")
    print(f"SQLAlchemy {sqlalchemy.__version__}, {url.drivername}", file=sys.stderr)
    engine = create_engine(url, pool_size=3, pool_pre_ping=True, connect_args={"connect_timeout": 10})

    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)

    with Session(engine) as session:
        session.add_all(
            [
                User(first_name="Ada", last_name="Lovelace", email="ada@example.com"),
                User(first_name="Alan", last_name="Turing", email="alan@example.com"),
                User(first_name="Grace", last_name="Hopper", email="grace@example.com"),
            ]
        )
        session.commit()
        ada_id = session.scalars(select(User.id).where(User.email == "ada@example.com")).one()

    with Session(engine) as session:
        ada = session.get(User, ada_id)
        assert ada is not None and ada.last_name == "Lovelace", ada
        alan = session.query(User).filter_by(email="alan@example.com").one()
        assert (alan.first_name, alan.last_name) == ("Alan", "Turing")
        alan.last_name = "M. Turing"
        session.commit()

    with Session(engine) as session:
        alan = session.scalars(select(User).filter_by(email="alan@example.com")).one()
        assert alan.last_name == "M. Turing", alan.last_name
        assert session.scalar(select(func.count()).select_from(User)) == 3
        session.delete(alan)
        session.commit()
        assert session.scalar(select(func.count()).select_from(User)) == 2
        assert session.query(User).filter_by(email="alan@example.com").one_or_none() is None

    # A unique violation rolls back the session, which stays usable.
    with Session(engine) as session:
        session.add(User(first_name="X", last_name="Y", email="ada@example.com"))
        try:
            session.commit()
            raise AssertionError("duplicate email accepted")
        except sqlalchemy.exc.IntegrityError as e:
            assert e.orig.sqlstate == "23505", e.orig.sqlstate
            session.rollback()
        names = session.scalars(select(User.first_name).order_by(User.id)).all()
        assert names == ["Ada", "Grace"], names

    # Pooled connections are reused across many short sessions.
    for i in range(30):
        with Session(engine) as session:
            assert session.scalar(select(func.count()).select_from(User)) == 2

    Base.metadata.drop_all(engine)
    engine.dispose()
    print("sqlalchemy OK")


if __name__ == "__main__":
    main()

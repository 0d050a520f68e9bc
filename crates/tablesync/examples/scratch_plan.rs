use tablesync::QualifiedName;
#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let connect = |db: String| async move {
        let (c, conn) = tokio_postgres::connect(&format!("host=/tmp/hs port=55990 user=postgres dbname={db}"), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        c
    };
    let src = connect(args[1].clone()).await;
    let dst = connect(args[2].clone()).await;
    let names = QualifiedName::parse_list(&args[3]).unwrap();
    let tables = if args[3].starts_with("pub:") { tablesync::publication_tables(&src, &args[3][4..]).await.unwrap() } else { tablesync::resolve_tables(&src, &names).await.unwrap() };
    let plan = tablesync::plan_target_schema(&src, &dst, &tables).await.unwrap();
    for s in plan.statements() { println!("{s};"); }
    println!("-- planned"); for p in &plan.planned { println!("--  {:?} {} {:?}", p.kind, p.name, p.detail); }
    println!("-- not created"); for p in &plan.not_created { println!("--  {:?} {} {} {:?}", p.kind, p.name, p.reason, p.fix); }
    println!("-- matching"); for p in &plan.matching { println!("--  {:?} {}", p.kind, p.name); }
    println!("-- problems"); for p in &plan.problems { println!("--  {p}"); }
    println!("-- warnings"); for p in &plan.warnings { println!("--  {p}"); }
    if args.len() > 4 {
        match plan.create(&dst).await { Ok(c) => println!("-- created; undo {c:?}"), Err(e) => println!("-- create failed: {e} {:?}", std::error::Error::source(&e)) }
    }
}
